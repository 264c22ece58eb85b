package anchor

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
)

func TestOpenUnregistered(t *testing.T) {
	// Package anchor's own tests link no provider (providers import
	// anchor, not the other way round), so awskms is unregistered here.
	_, err := Open(context.Background(), "awskms://alias/x?region=eu-west-1", Options{})
	if !errors.Is(err, ErrNotRegistered) || !strings.Contains(err.Error(), `"awskms"`) {
		t.Fatalf("err %v, want ErrNotRegistered naming awskms", err)
	}
	if _, err := Open(context.Background(), "nope://x", Options{}); !errors.Is(err, ErrUnknownScheme) {
		t.Fatalf("err %v, want ErrUnknownScheme", err)
	}
	if _, err := Open(context.Background(), "gcpkms://bad", Options{}); !errors.Is(err, ErrInvalidURI) {
		t.Fatalf("err %v, want ErrInvalidURI", err)
	}
}

func TestRegisterPanics(t *testing.T) {
	mustPanic := func(name string, f func()) {
		t.Helper()
		defer func() {
			if recover() == nil {
				t.Errorf("%s did not panic", name)
			}
		}()
		f()
	}
	op := func(context.Context, URI, Options) (Provider, error) { return nil, nil }
	mustPanic("unknown scheme", func() { Register("vault", op) })
	mustPanic("nil opener", func() { Register(SchemeGCPKMS, nil) })
	Register(SchemeAzureKV, op)
	t.Cleanup(func() { // keep the test repeatable (-count)
		registry.mu.Lock()
		delete(registry.openers, SchemeAzureKV)
		registry.mu.Unlock()
	})
	mustPanic("second registration", func() { Register(SchemeAzureKV, op) })
	if r := Registered(); !slices.Contains(r, SchemeAzureKV) {
		t.Errorf("Registered() = %v", r)
	}
}

func TestOptionsLog(t *testing.T) {
	if (Options{}).Log() == nil {
		t.Fatal("nil logger not defaulted")
	}
}

// TestProviderOptions: what every provider's opener reads from Options.Provider: nothing, a T, a
// *T (nil or not), and a refusal naming the wanted type for anything else.
func TestProviderOptions(t *testing.T) {
	type opts struct{ Region string }
	for name, tc := range map[string]struct {
		given any
		want  opts
	}{
		"none":        {nil, opts{}},
		"value":       {opts{Region: "eu"}, opts{Region: "eu"}},
		"pointer":     {&opts{Region: "us"}, opts{Region: "us"}},
		"nil pointer": {(*opts)(nil), opts{}},
	} {
		o := Options{Provider: map[string]any{"x": opts{Region: "other scheme"}}}
		if tc.given != nil {
			o.Provider[SchemeAWSKMS] = tc.given
		}
		got, err := ProviderOptions[opts](o, SchemeAWSKMS)
		if err != nil || got != tc.want {
			t.Errorf("%s: got %+v, %v; want %+v", name, got, err, tc.want)
		}
	}
	_, err := ProviderOptions[opts](Options{Provider: map[string]any{SchemeAWSKMS: "region=eu"}}, SchemeAWSKMS)
	if err == nil || !strings.Contains(err.Error(), `anchor.Options.Provider["awskms"] is a string, want anchor.opts`) {
		t.Fatalf("err %v, want a refusal naming the type", err)
	}
}
