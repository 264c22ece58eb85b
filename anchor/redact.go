package anchor

import (
	"fmt"
	"slices"
	"strings"
)

// Redact returns an anchor URI in a form that may be shown anywhere: in an
// API response (to viewer tokens too), an audit record or a log line. It is
// the one redaction every plane uses. A URI that parses and holds no secret
// comes back as it is; one that holds a secret comes back in its canonical
// form with every secret query parameter's value shown as "xxxxx" (a pkcs11
// pin-value, a vendor attribute named like a credential; see SecretParam);
// one that does not parse shows only its scheme if it is
// a known one, since what failed to parse may be a misplaced secret. ""
// stays "".
//
// A URI stored before CheckStorable existed (in an old Raft log or
// snapshot) may still hold a PIN: it is redacted here on the way out.
func Redact(uri string) string {
	if uri == "" {
		return ""
	}
	u, err := Parse(uri)
	if err != nil {
		scheme, _, ok := splitScheme(uri)
		if !ok || !slices.Contains(Schemes, scheme) { // an unknown "scheme" may be a secret
			return "(anchor URI not shown: it does not parse)"
		}
		return scheme + ":(not shown: the URI does not parse)"
	}
	if CheckStorable(u) == nil {
		return uri // it parses and holds no secret: shown as the operator wrote it
	}
	return u.String()
}

// SecretParam reports whether a query parameter of an anchor URI holds a
// secret: pkcs11's pin-value, and any vendor attribute (x-...) whose name
// says it is a credential (pin, pass, pwd, secret, cred, token, auth, key).
// Their values are never shown (Redact, String) and never stored
// (CheckStorable).
func SecretParam(name string) bool {
	if name == "pin-value" {
		return true
	}
	if !strings.HasPrefix(name, "x-") {
		return false
	}
	for _, w := range []string{"pin", "pass", "pwd", "secret", "cred", "token", "auth", "key"} {
		if strings.Contains(name, w) {
			return true
		}
	}
	return false
}

// CheckStorable refuses a URI that would put a secret into what Krypton
// stores: a tenant's anchor URI is in governance's and every region's Raft
// log, snapshots and backups, so it must hold no PIN. Governance (tenant
// create, set-anchor) and the region (tenant create, rekey) call it before
// anything is proposed. The error wraps ErrSecretInURI and names the fix
// (pin-source), never the value.
//
// pin-value stays accepted by Parse and Open, for a process that opens an
// anchor without storing its URI (tests, a one-off check on an operator's
// machine); nothing that persists a URI accepts it.
func CheckStorable(u URI) error {
	p, ok := u.(*PKCS11URI)
	if !ok {
		return nil // no other scheme has a parameter that can hold a secret
	}
	if p.hasPIN {
		return fmt.Errorf("%w: pkcs11: pin-value puts the PIN in the tenant's URI, which every Raft log, snapshot and backup keeps; "+
			"write the PIN to a file readable only by krypton on every node and give pin-source=file:/path/to/pin instead", ErrSecretInURI)
	}
	// Vendor attributes may stand in the path as well as in the query (RFC 7512).
	for name := range mapsKeys(p.path, p.query) {
		if SecretParam(name) {
			return fmt.Errorf("%w: pkcs11: a query attribute named like a credential would be stored with the tenant; "+
				"give the PIN with pin-source=file:/path/to/pin and credentials in the node's configuration", ErrSecretInURI)
		}
	}
	return nil
}

// mapsKeys yields the keys of every map given.
func mapsKeys(ms ...map[string]string) map[string]struct{} {
	out := map[string]struct{}{}
	for _, m := range ms {
		for k := range m {
			out[k] = struct{}{}
		}
	}
	return out
}
