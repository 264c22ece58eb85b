package policy

import "testing"

// FuzzMatch checks the compiled matcher (Compile, Allows) against the naive one on any valid
// pattern and any caller. In `make fuzz`; the seeds and the corpus in testdata/fuzz run in every
// `go test`.
func FuzzMatch(f *testing.F) {
	for _, c := range matchCases {
		f.Add(c.pattern, c.caller)
	}
	f.Fuzz(func(t *testing.T, pattern, caller string) {
		if CheckCallerPattern(pattern) != nil {
			return
		}
		c := Compile(Policy{Revision: 1, Rules: []Rule{{Caller: pattern, Service: "*", Operations: []Op{Wrap}}}})
		got, want := c.Allows([]byte(caller), "svc", Wrap), naiveMatch(pattern, caller)
		if got != want {
			t.Fatalf("pattern %q, caller %q: compiled %v, naive %v", pattern, caller, got, want)
		}
	})
}
