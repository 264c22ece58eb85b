package wrap

import (
	"fmt"
	"strconv"
	"strings"
)

// MaxNameLen is the longest tenant or service name, in bytes.
const MaxNameLen = 64

// ValidateName reports whether s is a valid tenant or service name: 1 to
// MaxNameLen bytes, the first in [a-z0-9], the rest in [a-z0-9._-]. It is
// the one definition of a name in Krypton; fsm, region, transport and pki
// call it rather than keep their own.
//
// Names are restricted to this small alphabet so that they are safe in
// URIs (SPIFFE SANs), file names, metric labels and log lines without
// escaping, and so that a KeyID's string form ("tenant/service@v3") can be
// parsed back unambiguously. The error names the offending position, never
// the name's bytes.
func ValidateName(s string) error {
	return validateNameBytes(s)
}

// validateNameBytes is ValidateName for both strings and the byte slices
// of a blob header being parsed, so that both follow one definition.
func validateNameBytes[T string | []byte](s T) error {
	if len(s) == 0 {
		return fmt.Errorf("%w: empty", ErrInvalidName)
	}
	if len(s) > MaxNameLen {
		return fmt.Errorf("%w: %d bytes, longer than %d", ErrInvalidName, len(s), MaxNameLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9':
		case i > 0 && (c == '.' || c == '_' || c == '-'):
		case i == 0 && (c == '.' || c == '_' || c == '-'):
			return fmt.Errorf("%w: must start with [a-z0-9]", ErrInvalidName)
		default:
			return fmt.Errorf("%w: byte %d is not in [a-z0-9._-]", ErrInvalidName, i)
		}
	}
	return nil
}

// KeyID names one version of a key in the hierarchy.
//
// A tenant key (L2) has an empty Service: {Tenant: "acme", Version: 2}.
// A service key (L3) names its tenant and service:
// {Tenant: "acme", Service: "payments", Version: 3}. Versions start at 1;
// the zero Version is never valid, so a zero KeyID never names a key.
//
// KeyID is comparable and may be used as a map key.
type KeyID struct {
	Tenant  string
	Service string
	Version uint32
}

// IsTenant reports whether id names a tenant key (L2), that is, has no
// Service.
func (id KeyID) IsTenant() bool { return id.Service == "" }

// Validate reports whether id is a well-formed tenant key (L2) or service
// key (L3) identity: a valid tenant, an empty or valid service, and a
// version of at least 1.
func (id KeyID) Validate() error {
	if err := ValidateName(id.Tenant); err != nil {
		return fmt.Errorf("%w: tenant: %w", ErrInvalidKeyID, err)
	}
	if id.Service != "" {
		if err := ValidateName(id.Service); err != nil {
			return fmt.Errorf("%w: service: %w", ErrInvalidKeyID, err)
		}
	}
	if id.Version == 0 {
		return fmt.Errorf("%w: version 0", ErrInvalidKeyID)
	}
	return nil
}

// validateTenant is Validate plus the requirement that id names an L2.
func (id KeyID) validateTenant() error {
	if err := id.Validate(); err != nil {
		return err
	}
	if !id.IsTenant() {
		return fmt.Errorf("%w: a tenant key has no service", ErrInvalidKeyID)
	}
	return nil
}

// validateService is Validate plus the requirement that id names an L3.
func (id KeyID) validateService() error {
	if err := id.Validate(); err != nil {
		return err
	}
	if id.IsTenant() {
		return fmt.Errorf("%w: a service key needs a service", ErrInvalidKeyID)
	}
	return nil
}

// String returns "tenant/service@v3" for a service key and "tenant@v2" for
// a tenant key. For a valid KeyID, ParseKeyID(id.String()) == id.
func (id KeyID) String() string {
	var b strings.Builder
	b.Grow(len(id.Tenant) + 1 + len(id.Service) + 12)
	b.WriteString(id.Tenant)
	if id.Service != "" {
		b.WriteByte('/')
		b.WriteString(id.Service)
	}
	b.WriteString("@v")
	b.WriteString(strconv.FormatUint(uint64(id.Version), 10))
	return b.String()
}

// ParseKeyID parses the form written by KeyID.String ("acme/payments@v3"
// or "acme@v2") and validates the result. It is meant for operator input
// (CLI flags, config files); the error does not echo s.
func ParseKeyID(s string) (KeyID, error) {
	at := strings.LastIndexByte(s, '@')
	if at < 0 || at+2 > len(s) || s[at+1] != 'v' {
		return KeyID{}, fmt.Errorf("%w: want tenant[/service]@vN", ErrInvalidKeyID)
	}
	digits := s[at+2:]
	// ParseUint accepts a leading '+' nowhere and no spaces, but accepts
	// leading zeros; refuse them so the string form is canonical.
	if len(digits) > 1 && digits[0] == '0' {
		return KeyID{}, fmt.Errorf("%w: version has leading zeros", ErrInvalidKeyID)
	}
	v, err := strconv.ParseUint(digits, 10, 32)
	if err != nil {
		return KeyID{}, fmt.Errorf("%w: version is not a 32-bit unsigned number", ErrInvalidKeyID)
	}
	id := KeyID{Version: uint32(v)}
	name := s[:at]
	if slash := strings.IndexByte(name, '/'); slash >= 0 {
		id.Tenant, id.Service = name[:slash], name[slash+1:]
		if id.Service == "" {
			return KeyID{}, fmt.Errorf("%w: empty service", ErrInvalidKeyID)
		}
	} else {
		id.Tenant = name
	}
	if err := id.Validate(); err != nil {
		return KeyID{}, err
	}
	return id, nil
}
