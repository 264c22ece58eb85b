package governance

import (
	"strings"
	"testing"
)

// A governance without -dev-anchor refuses every http:// endpoint override, loopback included; with
// it, only loopback (anchor.CheckTransport). https:// is always accepted.
func TestCheckAnchorEndpoint(t *testing.T) {
	const key = "awskms://alias/krypton-acme?region=eu-west-1&endpoint="
	for _, c := range []struct {
		ep       string
		allowDev bool
		ok       bool
	}{
		{"https://kms.example.com", false, true},
		{"http://127.0.0.1:4599", false, false},
		{"http://127.0.0.1:4599", true, true},
		{"http://kms.example.com", true, false},
	} {
		err := checkAnchor(key+c.ep, c.allowDev)
		if c.ok != (err == nil) || err != nil && !strings.Contains(err.Error(), "https://") {
			t.Errorf("%s (dev anchors %v): %v", c.ep, c.allowDev, err)
		}
	}
}
