package anchor

import (
	"fmt"
	"net/url"
	"path"
	"regexp"
	"slices"
	"strconv"
	"strings"
)

// PKCS11URI is an RFC 7512 URI naming a secret key on a PKCS#11 token:
//
//	pkcs11:token=krypton;object=root-2026?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/krypton/pin
//
// Path attributes (token, object, id, serial, slot-id, ...) select the
// token and the key; query attributes say how to reach it: module-path or
// module-name (the library), and pin-source or pin-value (the user PIN).
// Values are percent-decoded. Krypton needs the key named by object or
// id, and the token by token, serial or slot-id; type, if given, must be
// secret-key.
//
// pin-value is a secret: it is kept out of String, GoString, KeyName and
// every error, and CheckStorable refuses it in any URI Krypton stores (a
// tenant's anchor). Use pin-source, which names a file the PIN is read from.
type PKCS11URI struct {
	path   map[string]string // decoded path attributes
	query  map[string]string // decoded query attributes, without pin-value
	pin    string            // pin-value
	hasPIN bool
}

// RFC 7512 section 2.3 attribute names, in the order String writes them.
var (
	pkcs11PathAttrs = []string{
		"library-manufacturer", "library-description", "library-version",
		"slot-manufacturer", "slot-description", "slot-id",
		"manufacturer", "model", "serial", "token",
		"type", "object", "id",
	}
	pkcs11QueryAttrs = []string{"module-name", "module-path", "pin-source", "pin-value"}

	// Characters allowed unescaped in values: RFC 7512 pk11-pchar
	// (path) and pk11-qchar (query).
	pkcs11PathChar  = regexp.MustCompile(`^[A-Za-z0-9\-._~:\[\]@!$'()*+,=&%]*$`)
	pkcs11QueryChar = regexp.MustCompile(`^[A-Za-z0-9\-._~:\[\]@!$'()*+,=/?|;%]*$`)
	pkcs11Version   = regexp.MustCompile(`^[0-9]{1,3}(\.[0-9]{1,3})?$`)
	pkcs11ModName   = regexp.MustCompile(`^[A-Za-z0-9._+-]{1,128}$`)
	pkcs11Vendor    = regexp.MustCompile(`^x-[a-z0-9-]{1,32}$`)
)

func parsePKCS11(rest string) (*PKCS11URI, error) {
	p, q, _ := strings.Cut(rest, "?")
	u := &PKCS11URI{path: map[string]string{}, query: map[string]string{}}
	if p != "" {
		for i, av := range strings.Split(p, ";") {
			if err := u.set("path", i+1, av, pkcs11PathAttrs, pkcs11PathChar, u.path); err != nil {
				return nil, err
			}
		}
	}
	if q != "" {
		for i, av := range strings.Split(q, "&") {
			if err := u.set("query", i+1, av, pkcs11QueryAttrs, pkcs11QueryChar, u.query); err != nil {
				return nil, err
			}
		}
	}
	if v, ok := u.query["pin-value"]; ok {
		u.pin, u.hasPIN = v, true
		delete(u.query, "pin-value")
	}
	return u, u.validate()
}

// set decodes one attr=value and stores it in m. The error names the
// attribute only if it is a known one (or a vendor x- one) and never
// shows a value.
func (u *PKCS11URI) set(part string, n int, av string, known []string, chars *regexp.Regexp, m map[string]string) error {
	name, v, ok := strings.Cut(av, "=")
	if !ok || name == "" {
		return fmt.Errorf("%w: pkcs11: %s attribute %d is not name=value", ErrInvalidURI, part, n)
	}
	if !slices.Contains(known, name) && !pkcs11Vendor.MatchString(name) {
		if part == "path" && slices.Contains(pkcs11QueryAttrs, name) {
			return fmt.Errorf("%w: pkcs11: %q belongs in the query (after '?')", ErrInvalidURI, name)
		}
		return fmt.Errorf("%w: pkcs11: %s attribute %d is not one of %s or x-*", ErrInvalidURI, part, n, strings.Join(known, ", "))
	}
	if _, dup := m[name]; dup {
		return fmt.Errorf("%w: pkcs11: attribute %q repeated", ErrInvalidURI, name)
	}
	if !chars.MatchString(v) {
		return fmt.Errorf("%w: pkcs11: attribute %q has a character that must be percent-encoded", ErrInvalidURI, name)
	}
	dv, err := url.PathUnescape(v)
	if err != nil {
		return fmt.Errorf("%w: pkcs11: attribute %q has a bad percent escape", ErrInvalidURI, name)
	}
	if dv == "" {
		return fmt.Errorf("%w: pkcs11: attribute %q is empty", ErrInvalidURI, name)
	}
	m[name] = dv
	return nil
}

func (u *PKCS11URI) validate() error {
	bad := func(msg string) error { return fmt.Errorf("%w: pkcs11: %s", ErrInvalidURI, msg) }
	if u.path["object"] == "" && u.path["id"] == "" {
		return bad("name the key with object or id")
	}
	if u.path["token"] == "" && u.path["serial"] == "" && u.path["slot-id"] == "" {
		return bad("name the token with token, serial or slot-id")
	}
	if t, ok := u.path["type"]; ok && t != "secret-key" {
		return bad("type must be secret-key (Krypton seals with an AES key)")
	}
	if s, ok := u.path["slot-id"]; ok {
		if _, err := strconv.ParseUint(s, 10, 64); err != nil {
			return bad("slot-id must be a decimal number")
		}
	}
	if v, ok := u.path["library-version"]; ok && !pkcs11Version.MatchString(v) {
		return bad("library-version must be M or M.N")
	}
	if mp, ok := u.query["module-path"]; ok && (!path.IsAbs(mp) || path.Clean(mp) != mp) {
		return bad("module-path must be an absolute, clean path")
	}
	if mn, ok := u.query["module-name"]; ok && !pkcs11ModName.MatchString(mn) {
		return bad("module-name must be a library name, not a path")
	}
	if ps, ok := u.query["pin-source"]; ok {
		if u.hasPIN {
			return bad("give pin-source or pin-value, not both")
		}
		if _, err := pinSourcePath(ps); err != nil {
			return err
		}
	}
	return nil
}

// pinSourcePath returns the file a pin-source names: "file:/abs",
// "file:///abs" or "/abs".
func pinSourcePath(ps string) (string, error) {
	p := ps
	switch {
	case strings.HasPrefix(p, "file://"):
		p = strings.TrimPrefix(p, "file://")
	case strings.HasPrefix(p, "file:"):
		p = strings.TrimPrefix(p, "file:")
	}
	if !path.IsAbs(p) || path.Clean(p) != p {
		return "", fmt.Errorf("%w: pkcs11: pin-source must be file:/absolute/path or /absolute/path", ErrInvalidURI)
	}
	return p, nil
}

// Attr returns a decoded path attribute ("token", "object", "serial",
// "x-vendor", ...).
func (u *PKCS11URI) Attr(name string) (string, bool) { v, ok := u.path[name]; return v, ok }

// Token returns the token label, or "".
func (u *PKCS11URI) Token() string { return u.path["token"] }

// Object returns the key's label (CKA_LABEL), or "".
func (u *PKCS11URI) Object() string { return u.path["object"] }

// ID returns the key's CKA_ID bytes, or nil.
func (u *PKCS11URI) ID() []byte {
	if v, ok := u.path["id"]; ok {
		return []byte(v)
	}
	return nil
}

// SlotID returns the slot-id attribute.
func (u *PKCS11URI) SlotID() (uint64, bool) {
	s, ok := u.path["slot-id"]
	if !ok {
		return 0, false
	}
	n, _ := strconv.ParseUint(s, 10, 64) // validated by Parse
	return n, true
}

// ModulePath returns the module-path query attribute, or "".
func (u *PKCS11URI) ModulePath() string { return u.query["module-path"] }

// ModuleName returns the module-name query attribute, or "".
func (u *PKCS11URI) ModuleName() string { return u.query["module-name"] }

// PINSource returns the file named by pin-source ("" if none), with any
// "file:" prefix removed.
func (u *PKCS11URI) PINSource() string {
	ps, ok := u.query["pin-source"]
	if !ok {
		return ""
	}
	p, _ := pinSourcePath(ps) // validated by Parse
	return p
}

// PIN returns the pin-value attribute. It is a secret: do not log it.
func (u *PKCS11URI) PIN() (string, bool) { return u.pin, u.hasPIN }

func (u *PKCS11URI) Scheme() string { return SchemePKCS11 }

// KeyName returns the canonical path part ("token=krypton;object=root"),
// which names the key and holds no secret.
func (u *PKCS11URI) KeyName() string {
	var parts []string
	for _, a := range u.attrOrder(u.path, pkcs11PathAttrs) {
		if SecretParam(a) { // a vendor path attribute named like a credential
			parts = append(parts, a+"=xxxxx")
			continue
		}
		parts = append(parts, a+"="+pkcs11Escape(u.path[a]))
	}
	return strings.Join(parts, ";")
}

// String returns the canonical URI with pin-value, and any vendor query
// attribute named like a credential (SecretParam), shown as "xxxxx".
func (u *PKCS11URI) String() string {
	var q []string
	for _, a := range u.attrOrder(u.query, pkcs11QueryAttrs) {
		if SecretParam(a) { // a vendor attribute named like a credential
			q = append(q, a+"=xxxxx")
			continue
		}
		q = append(q, a+"="+pkcs11Escape(u.query[a]))
	}
	if u.hasPIN {
		q = append(q, "pin-value=xxxxx")
	}
	s := "pkcs11:" + u.KeyName()
	if len(q) > 0 {
		s += "?" + strings.Join(q, "&")
	}
	return s
}

// GoString keeps %#v from printing the PIN field.
func (u *PKCS11URI) GoString() string { return fmt.Sprintf("anchor.PKCS11URI(%q)", u.String()) }

// attrOrder returns m's keys: the standard ones in RFC order, then vendor
// ones sorted.
func (u *PKCS11URI) attrOrder(m map[string]string, std []string) []string {
	var out, vendor []string
	for _, a := range std {
		if _, ok := m[a]; ok {
			out = append(out, a)
		}
	}
	for a := range m {
		if !slices.Contains(std, a) {
			vendor = append(vendor, a)
		}
	}
	slices.Sort(vendor)
	return append(out, vendor...)
}

// pkcs11Escape percent-encodes every byte that is not unreserved, as RFC
// 7512 section 2.4 recommends for a canonical form.
func pkcs11Escape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}
