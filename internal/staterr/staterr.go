// Package staterr holds the one definition of each refusal both state machines make: the region's
// (package fsm) and governance's (package govfsm). Each shared error has a stable key, the code
// that carries it between nodes of a plane (fsm's response codec, govfsm's Codec), so the two
// planes spell it alike on the wire.
//
// Each state machine keeps its own sentinel, with its own prefix and wording ("fsm: tenant not
// found", "governance: tenant not found"), made with Own: errors.Is matches both the package's
// sentinel and the shared error, so code that handles both planes (transport's error table) tests
// the shared one once.
//
// The package is pure: standard library only, no I/O.
package staterr

// Error is a refusal both state machines make: a stable key and a fixed text without a package
// prefix. It carries no request bytes.
type Error struct {
	key  string
	text string
}

func (e *Error) Error() string { return e.text }

// Key is the error's stable wire key. Keys never change meaning.
func (e *Error) Key() string { return e.key }

// The shared refusals.
var (
	// ErrTenantNotFound: a command or query names an unknown tenant.
	ErrTenantNotFound = add("tenant-not-found", "tenant not found")
	// ErrTenantExists: a tenant is created that exists (or existed: names are never reused).
	ErrTenantExists = add("tenant-exists", "tenant exists")
	// ErrServiceNotFound: a command or query names an unknown service.
	ErrServiceNotFound = add("service-not-found", "service not found")
	// ErrServiceExists: a service is created that exists (or existed).
	ErrServiceExists = add("service-exists", "service exists")
	// ErrRevoked: the change is refused because what it concerns is revoked (terminal).
	ErrRevoked = add("revoked", "revoked")
	// ErrInvalidCommand: a command fails the state machine's own validation.
	ErrInvalidCommand = add("invalid-command", "invalid command")
	// ErrRequestIDReused: a request id that is still remembered names a different change.
	ErrRequestIDReused = add("request-id-reused", "request id reused for a different command")
	// ErrConsentDenied: the tenant owner's consent does not allow this change.
	ErrConsentDenied = add("consent-denied", "the tenant owner's consent does not allow this change; the owner makes one with `krypton owner consent`")
	// ErrConsentUsed: the consent was already used (a consent is used once).
	ErrConsentUsed = add("consent-used", "this consent was already used; the owner makes a new one with `krypton owner consent`")
)

var all []*Error

func add(key, text string) *Error {
	e := &Error{key: key, text: text}
	all = append(all, e)
	return e
}

// All lists every shared error, for the tables that must map each.
func All() []*Error { return append([]*Error(nil), all...) }

// Sentinel is one state machine's own sentinel for a shared error: its own fixed text (with the
// package's prefix), matching the shared error with errors.Is. Make one per package variable,
// never at a call site: transport sends a Sentinel's text on the wire, so it must be fixed and
// carry no request bytes.
type Sentinel struct {
	shared *Error
	text   string
}

// Own returns a package's sentinel for shared, with the package's own text.
func Own(shared *Error, text string) *Sentinel { return &Sentinel{shared: shared, text: text} }

func (s *Sentinel) Error() string { return s.text }

// Unwrap returns the shared error.
func (s *Sentinel) Unwrap() error { return s.shared }

// Shared returns the shared error s stands for.
func (s *Sentinel) Shared() *Error { return s.shared }
