package anchortest_test

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sync"
	"testing"
	"time"

	"github.com/kryptonkms/krypton/anchor"
	"github.com/kryptonkms/krypton/anchor/anchortest"
	"github.com/kryptonkms/krypton/anchor/file"
)

// The suite is only worth something if it fails on providers that break
// the contract. Each case wraps the file anchor to break one rule; a
// child process runs the suite on it, and the parent checks that the
// named sub-test, and the run, failed.
var broken = map[string]struct {
	wrap    func(anchor.Provider) anchor.Provider
	failing string // the sub-test that must catch it
}{
	"IgnoresContext":    {func(p anchor.Provider) anchor.Provider { return ignoresContext{p} }, "WrongContext"},
	"Deterministic":     {func(p anchor.Provider) anchor.Provider { return &deterministic{Provider: p} }, "DistinctCiphertexts"},
	"UntypedDenials":    {func(p anchor.Provider) anchor.Provider { return mapErr{p, untype} }, "Disable"},
	"TransientAsDenial": {func(p anchor.Provider) anchor.Provider { return mapErr{p, transientAsDenied} }, "Transient"},
	"LeaksPlaintext":    {func(p anchor.Provider) anchor.Provider { return leaky{p} }, "WrongContext"},
	"CloseNoop":         {func(p anchor.Provider) anchor.Provider { return closeNoop{p} }, "Close"},
}

const childEnv = "ANCHORTEST_BROKEN"

func TestSuiteCatchesBrokenProviders(t *testing.T) {
	if name := os.Getenv(childEnv); name != "" {
		runBroken(t, name)
		return
	}
	for name, b := range broken {
		t.Run(name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], "-test.run=^TestSuiteCatchesBrokenProviders$", "-test.v")
			cmd.Env = append(os.Environ(), childEnv+"="+name)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("the suite passed a provider that %s:\n%s", name, out)
			}
			re := regexp.MustCompile(`--- FAIL: TestSuiteCatchesBrokenProviders/` + b.failing + ` `)
			if !re.Match(out) {
				t.Fatalf("sub-test %s did not fail for %s:\n%s", b.failing, name, out)
			}
		})
	}
}

func runBroken(t *testing.T, name string) {
	b, ok := broken[name]
	if !ok {
		t.Fatalf("no broken provider %q", name)
	}
	open := func(t *testing.T) anchor.Provider {
		path := filepath.Join(t.TempDir(), "root.key")
		p, err := anchor.Open(context.Background(), "file://"+path, anchor.Options{Create: true, Logger: anchortest.Logger(t)})
		if err != nil {
			t.Fatal(err)
		}
		return b.wrap(p)
	}
	must := func(t *testing.T, err error) {
		if err != nil {
			t.Fatal(err)
		}
	}
	anchortest.Run(t, anchortest.Harness{
		Open:    open,
		Disable: func(t *testing.T, p anchor.Provider) { must(t, file.Disable(p.Describe().Key)) },
		Enable:  func(t *testing.T, p anchor.Provider) { must(t, file.Enable(p.Describe().Key)) },
		FailTransiently: func(t *testing.T, p anchor.Provider) func() {
			must(t, file.SetUnavailable(p.Describe().Key, true))
			return func() { must(t, file.SetUnavailable(p.Describe().Key, false)) }
		},
		ExactReasons: true,
		Development:  true,
		Timeout:      2 * time.Second,
	})
}

// ignoresContext seals everything under one Context.
type ignoresContext struct{ anchor.Provider }

var fixed = anchor.Context{Region: "r", Tenant: "t", Version: 1}

func (p ignoresContext) Seal(ctx context.Context, pt []byte, ac anchor.Context) ([]byte, error) {
	if err := ac.Validate(); err != nil {
		return nil, err
	}
	return p.Provider.Seal(ctx, pt, fixed)
}

func (p ignoresContext) Unseal(ctx context.Context, b []byte, ac anchor.Context) ([]byte, error) {
	if err := ac.Validate(); err != nil {
		return nil, err
	}
	return p.Provider.Unseal(ctx, b, fixed)
}

// deterministic returns the same blob for the same plaintext.
type deterministic struct {
	anchor.Provider
	mu   sync.Mutex
	seen map[string][]byte
}

func (p *deterministic) Seal(ctx context.Context, pt []byte, ac anchor.Context) ([]byte, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	k := string(pt) + ac.String()
	if b, ok := p.seen[k]; ok {
		return b, nil
	}
	b, err := p.Provider.Seal(ctx, pt, ac)
	if err == nil {
		if p.seen == nil {
			p.seen = map[string][]byte{}
		}
		p.seen[k] = b
	}
	return b, err
}

// mapErr rewrites every error.
type mapErr struct {
	anchor.Provider
	f func(error) error
}

func (p mapErr) Seal(ctx context.Context, pt []byte, ac anchor.Context) ([]byte, error) {
	b, err := p.Provider.Seal(ctx, pt, ac)
	return b, p.f(err)
}

func (p mapErr) Unseal(ctx context.Context, b []byte, ac anchor.Context) ([]byte, error) {
	pt, err := p.Provider.Unseal(ctx, b, ac)
	return pt, p.f(err)
}

func (p mapErr) Check(ctx context.Context) error { return p.f(p.Provider.Check(ctx)) }

func untype(err error) error {
	if err == nil {
		return nil
	}
	return errors.New(err.Error())
}

func transientAsDenied(err error) error {
	if anchor.IsTransient(err) {
		return anchor.Deny("check", "file", anchor.ReasonAccessDenied, nil)
	}
	return err
}

// leaky puts the plaintext it was given into Unseal's errors.
type leaky struct{ anchor.Provider }

func (p leaky) Unseal(ctx context.Context, b []byte, ac anchor.Context) ([]byte, error) {
	pt, err := p.Provider.Unseal(ctx, b, ac)
	if err != nil {
		if good, err2 := p.Provider.Unseal(ctx, b, anchor.Context{Region: "eu-west-1", Tenant: "acme", Version: 1}); err2 == nil {
			return nil, fmt.Errorf("%w (expected key %x)", err, good)
		}
	}
	return pt, err
}

// closeNoop ignores Close.
type closeNoop struct{ anchor.Provider }

func (closeNoop) Close() error { return nil }
