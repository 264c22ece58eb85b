package policy

import "strings"

// naiveMatch is the test oracle: the straightforward string matcher governance once carried
// (MatchCaller), with the semantics of the language: '*' matches any run of characters other than
// '/', a trailing "/**" any remaining path (including none). FuzzMatch checks the compiled
// matcher against it.
func naiveMatch(pattern, caller string) bool {
	if rest, ok := strings.CutSuffix(pattern, "/**"); ok {
		// "/**" matches "" or "/anything": try every '/' boundary.
		if matchStar(rest, caller) {
			return true
		}
		for i := 0; i < len(caller); i++ {
			if caller[i] == '/' && matchStar(rest, caller[:i]) {
				return true
			}
		}
		return false
	}
	return matchStar(pattern, caller)
}

// matchStar matches p, where '*' is a run of non-'/' characters, against s, with one backtrack
// point as path.Match does.
func matchStar(p, s string) bool {
	pi, si := 0, 0
	starP, starS := -1, 0
	for si < len(s) {
		switch {
		case pi < len(p) && p[pi] == '*':
			starP, starS = pi, si
			pi++
		case pi < len(p) && p[pi] == s[si]:
			pi++
			si++
		case starP >= 0 && s[starS] != '/':
			starS++
			pi, si = starP+1, starS
		default:
			return false
		}
	}
	for pi < len(p) && p[pi] == '*' {
		pi++
	}
	return pi == len(p)
}
