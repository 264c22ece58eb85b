package anchor

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
)

// An Opener makes a Provider for a parsed URI of its scheme. It may
// contact the provider (to resolve the key, check credentials) within
// ctx. Its errors follow the Provider contract: a *DeniedError if the key
// is definitely unusable, a *TransientError if the provider could not be
// reached.
type Opener func(ctx context.Context, u URI, opts Options) (Provider, error)

// Options are what Open passes to an Opener besides the URI.
type Options struct {
	// Logger receives the provider's logs; nil means slog.Default().
	Logger *slog.Logger

	// Development lets Open open a development anchor (file://). A server
	// sets it only when started with -dev-anchor; without it the file
	// provider refuses with ErrDevelopment before it touches any file, so a
	// tenant naming file:///etc/x?create=1 on a production node reads and
	// writes nothing.
	Development bool

	// Create asks a provider that can make its own key to make it if it
	// does not exist. Only the file:// development anchor can; cloud keys
	// and HSM keys are the customer's to create. Only `krypton dev` and
	// tests set it (it implies Development): a URI's own "?create=1" is
	// not enough, because a URI comes from an operator's request and a
	// server must never make directories and key files because one asked.
	Create bool

	// Provider holds provider-specific options keyed by scheme, e.g.
	// {"awskms": awskms.Options{...}}; each provider package documents the
	// type it takes. A config can carry options for every scheme, and
	// each provider picks its own.
	Provider map[string]any
}

// Log returns o.Logger, or slog.Default() if it is nil.
func (o Options) Log() *slog.Logger {
	if o.Logger != nil {
		return o.Logger
	}
	return slog.Default()
}

// ProviderOptions returns the options of type T that o carries for scheme, as each provider's
// opener reads them from o.Provider: the zero T when there are none (or a nil *T), the T given
// as a T or a *T, and an error naming the wanted type for anything else.
func ProviderOptions[T any](o Options, scheme string) (T, error) {
	var zero T
	switch v := o.Provider[scheme].(type) {
	case nil:
		return zero, nil
	case T:
		return v, nil
	case *T:
		if v == nil {
			return zero, nil
		}
		return *v, nil
	default:
		return zero, fmt.Errorf("%s: anchor.Options.Provider[%q] is a %T, want %T", scheme, scheme, v, zero)
	}
}

// registry maps schemes to openers. Written by Register, usually from
// provider packages' init functions; read by Open.
var registry struct {
	mu      sync.RWMutex
	openers map[string]Opener // guarded by mu
}

// Register makes a provider available to Open for scheme. Provider
// packages call it from init, so that a binary gets a provider by
// importing its package:
//
//	import _ "github.com/kryptonkms/krypton/anchor/file"
//
// It panics if scheme is not one of Schemes, opener is nil, or the scheme
// is already registered: all are programming errors.
func Register(scheme string, opener Opener) {
	if !slices.Contains(Schemes, scheme) {
		panic("anchor: Register of unknown scheme " + scheme)
	}
	if opener == nil {
		panic("anchor: Register with a nil opener for " + scheme)
	}
	registry.mu.Lock()
	defer registry.mu.Unlock()
	if registry.openers == nil {
		registry.openers = map[string]Opener{}
	}
	if _, dup := registry.openers[scheme]; dup {
		panic("anchor: Register called twice for " + scheme)
	}
	registry.openers[scheme] = opener
}

// Registered returns the schemes that have a provider in this binary,
// sorted.
func Registered() []string {
	registry.mu.RLock()
	defer registry.mu.RUnlock()
	var s []string
	for k := range registry.openers {
		s = append(s, k)
	}
	slices.Sort(s)
	return s
}

// Open parses uri and opens a Provider for it with the registered
// opener:
//
//	p, err := anchor.Open(ctx, "file:///var/lib/krypton/dev/root.key", anchor.Options{Development: true, Logger: log})
//	if err != nil { ... }
//	defer p.Close()
//
// Errors: those of Parse; ErrPlainEndpoint for an endpoint without TLS
// outside development (CheckTransport); ErrNotRegistered when this binary
// has no provider for the scheme; and those of the opener.
func Open(ctx context.Context, uri string, opts Options) (Provider, error) {
	u, err := Parse(uri)
	if err != nil {
		return nil, err
	}
	if err := CheckTransport(u, opts.Development || opts.Create); err != nil {
		return nil, err
	}
	registry.mu.RLock()
	open := registry.openers[u.Scheme()]
	registry.mu.RUnlock()
	if open == nil {
		reg := Registered()
		if len(reg) == 0 {
			reg = []string{"none"}
		}
		return nil, fmt.Errorf("%w: %q (registered: %s; import the provider package)",
			ErrNotRegistered, u.Scheme(), strings.Join(reg, ", "))
	}
	return open(ctx, u, opts)
}
