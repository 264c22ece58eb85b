package pkcs11

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kryptonkms/krypton/anchor"
	"github.com/kryptonkms/krypton/anchor/pkcs11/pkcs11test"
	"github.com/kryptonkms/krypton/internal/leaktest"
	"github.com/kryptonkms/krypton/internal/logtest"
	p11 "github.com/miekg/pkcs11"
)

// The tests run against the real SoftHSM2 module, on tokens they make in
// a temporary directory (SOFTHSM2_CONF is set before the module's one
// C_Initialize in this process).
const (
	softhsmPath = pkcs11test.ModulePath
	testToken   = "krypton-test"
	otherToken  = "krypton-other"
	testPIN     = "Pin-7f3c9a21-user"
	otherPIN    = "Pin-0b8d44e6-other"
	soPIN       = "Pin-c1e5aa02-so"
)

var env struct {
	skip    string // why the tests skip; empty when SoftHSM2 is there
	hsm     *pkcs11test.HSM
	test    *pkcs11test.Token // testToken
	other   *pkcs11test.Token // otherToken
	pinFile string
	mod     *module // held for the whole run: the providers share it

	logMu sync.Mutex
	logs  bytes.Buffer // everything every provider logged, scanned for PINs
}

func TestMain(m *testing.M) {
	if err := pkcs11test.Missing(); err != nil {
		if pkcs11test.Required() {
			fmt.Fprintf(os.Stderr, "pkcs11: SoftHSM2 is required (KRYPTON_REQUIRE_PEERS=1): %v\n", err)
			os.Exit(1)
		}
		env.skip = err.Error()
		os.Exit(m.Run())
	}
	dir, err := os.MkdirTemp("", "krypton-pkcs11-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := func() int {
		defer os.RemoveAll(dir)
		if err := setup(dir); err != nil {
			fmt.Fprintln(os.Stderr, "pkcs11 test setup:", err)
			return 1
		}
		code := m.Run()
		env.mod.release()
		env.hsm.Close()
		for _, pin := range []string{testPIN, otherPIN, soPIN} {
			if strings.Contains(env.logs.String(), pin) {
				fmt.Fprintln(os.Stderr, "FAIL: a PIN appears in the providers' logs")
				code = 1
			}
		}
		if code == 0 {
			if err := leaktest.Check(5 * time.Second); err != nil {
				fmt.Fprintf(os.Stderr, "FAIL: goroutines left behind:\n%v\n", err)
				code = 1
			}
		}
		return code
	}()
	os.Exit(code)
}

// setup makes the two tokens with pkcs11test (which initialises the module first, so the
// providers find it initialised and share it) and holds the module for the whole run.
func setup(dir string) error {
	hsm, err := pkcs11test.Setup(dir)
	if err != nil {
		return err
	}
	env.hsm = hsm
	if env.test, err = hsm.InitToken(testToken, soPIN, testPIN); err != nil {
		return err
	}
	if env.other, err = hsm.InitToken(otherToken, soPIN, otherPIN); err != nil {
		return err
	}
	env.pinFile = env.test.PINFile
	mod, err := acquire(softhsmPath)
	if err != nil {
		return err
	}
	env.mod = mod
	return nil
}

func needHSM(t testing.TB) {
	t.Helper()
	if env.skip != "" {
		t.Skip(env.skip)
	}
}

// testLogger writes to t.Log and to env.logs.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(logWriter{logtest.New(t)}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type logWriter struct{ t *logtest.Writer }

func (w logWriter) Write(b []byte) (int, error) {
	env.logMu.Lock()
	env.logs.Write(b)
	env.logMu.Unlock()
	return w.t.Write(b)
}

// token returns the pkcs11test token with label.
func token(label string) *pkcs11test.Token {
	if label == otherToken {
		return env.other
	}
	return env.test
}

// genKey makes an AES-256 key on token (pkcs11test.Token.NewKey) and returns its label. Changes
// to the template (by attribute type) replace the defaults.
func genKey(t testing.TB, tok string, changes ...*p11.Attribute) string {
	t.Helper()
	return token(tok).NewKey(t, changes...)
}

func testURI(label string) string { return env.test.URI(label) }

func openURI(t testing.TB, uri string, o Options) (*Provider, error) {
	t.Helper()
	p, err := anchor.Open(context.Background(), uri, anchor.Options{Logger: testLogger(t),
		Provider: map[string]any{anchor.SchemePKCS11: o}})
	if err != nil {
		return nil, err
	}
	return p.(*Provider), nil
}

// openNew opens a Provider on a fresh key; closed at the end of the test.
func openNew(t testing.TB, o Options) *Provider {
	t.Helper()
	needHSM(t)
	p, err := openURI(t, testURI(genKey(t, testToken)), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// noPIN fails if any PIN shows in s.
func noPIN(t testing.TB, what, s string) {
	t.Helper()
	for _, pin := range []string{testPIN, otherPIN, soPIN} {
		if strings.Contains(s, pin) {
			t.Errorf("%s shows a PIN", what)
		}
	}
}
