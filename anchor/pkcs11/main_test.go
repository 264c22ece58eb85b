package pkcs11

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/kryptonkms/krypton/anchor"
	"github.com/kryptonkms/krypton/internal/leaktest"
	p11 "github.com/miekg/pkcs11"
	"go.uber.org/goleak"
)

// The tests run against the real SoftHSM2 module, on tokens they make in
// a temporary directory (SOFTHSM2_CONF is set before the module's one
// C_Initialize in this process).
const (
	softhsmPath = "/usr/lib/softhsm/libsofthsm2.so"
	testToken   = "krypton-test"
	otherToken  = "krypton-other"
	testPIN     = "Pin-7f3c9a21-user"
	otherPIN    = "Pin-0b8d44e6-other"
	soPIN       = "Pin-c1e5aa02-so"
)

var env struct {
	skip    string // why the tests skip; empty when SoftHSM2 is there
	pinFile string
	mod     *module // held for the whole run: one C_Initialize per process

	logMu sync.Mutex
	logs  bytes.Buffer // everything every provider logged, scanned for PINs
}

func TestMain(m *testing.M) {
	if _, err := os.Stat(softhsmPath); err != nil {
		if os.Getenv("KRYPTON_REQUIRE_PEERS") == "1" {
			fmt.Fprintf(os.Stderr, "pkcs11: SoftHSM2 is required (KRYPTON_REQUIRE_PEERS=1): %v\n", err)
			os.Exit(1)
		}
		env.skip = "SoftHSM2 not installed (" + softhsmPath + "); install softhsm2 or set KRYPTON_REQUIRE_PEERS=1 to fail"
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
		for _, pin := range []string{testPIN, otherPIN, soPIN} {
			if strings.Contains(env.logs.String(), pin) {
				fmt.Fprintln(os.Stderr, "FAIL: a PIN appears in the providers' logs")
				code = 1
			}
		}
		if code == 0 {
			if err := noLeaks(5 * time.Second); err != nil {
				fmt.Fprintf(os.Stderr, "FAIL: goroutines left behind:\n%v\n", err)
				code = 1
			}
		}
		return code
	}()
	os.Exit(code)
}

func noLeaks(grace time.Duration) error {
	deadline := time.Now().Add(grace)
	for {
		err := goleak.Find(leaktest.Ignored...)
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func setup(dir string) error {
	tokens := filepath.Join(dir, "tokens")
	if err := os.Mkdir(tokens, 0o700); err != nil {
		return err
	}
	conf := filepath.Join(dir, "softhsm2.conf")
	if err := os.WriteFile(conf, []byte("directories.tokendir = "+tokens+"\nobjectstore.backend = file\nlog.level = ERROR\n"), 0o600); err != nil {
		return err
	}
	os.Setenv("SOFTHSM2_CONF", conf)
	for _, t := range []struct{ label, pin string }{{testToken, testPIN}, {otherToken, otherPIN}} {
		out, err := exec.Command("softhsm2-util", "--init-token", "--free", "--label", t.label, "--so-pin", soPIN, "--pin", t.pin).CombinedOutput()
		if err != nil {
			return fmt.Errorf("softhsm2-util --init-token: %v: %s", err, out)
		}
	}
	env.pinFile = filepath.Join(dir, "pin")
	if err := os.WriteFile(env.pinFile, []byte(testPIN+"\n"), 0o600); err != nil {
		return err
	}
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
	return slog.New(slog.NewTextHandler(logWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type logWriter struct{ t testing.TB }

func (w logWriter) Write(b []byte) (int, error) {
	env.logMu.Lock()
	env.logs.Write(b)
	env.logMu.Unlock()
	w.t.Log(strings.TrimRight(string(b), "\n"))
	return len(b), nil
}

// admin opens a read-write session on the test token, logged in as the
// user, for making and changing keys; closed at the end of the test.
func admin(t testing.TB, token, pin string) p11.SessionHandle {
	t.Helper()
	slot, err := env.mod.findSlot(tokenSelector{label: token})
	if err != nil {
		t.Fatal(err)
	}
	s, err := env.mod.ctx.OpenSession(slot, p11.CKF_SERIAL_SESSION|p11.CKF_RW_SESSION)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { env.mod.ctx.CloseSession(s) })
	if err := env.mod.login(s, slot, secret(pin)); err != nil {
		t.Fatal(err)
	}
	return s
}

// keyTemplate is the key Krypton requires (doc.go), with label.
func keyTemplate(label string) []*p11.Attribute {
	return []*p11.Attribute{
		p11.NewAttribute(p11.CKA_CLASS, p11.CKO_SECRET_KEY),
		p11.NewAttribute(p11.CKA_KEY_TYPE, p11.CKK_AES),
		p11.NewAttribute(p11.CKA_VALUE_LEN, 32),
		p11.NewAttribute(p11.CKA_TOKEN, true),
		p11.NewAttribute(p11.CKA_PRIVATE, true),
		p11.NewAttribute(p11.CKA_SENSITIVE, true),
		p11.NewAttribute(p11.CKA_EXTRACTABLE, false),
		p11.NewAttribute(p11.CKA_ENCRYPT, true),
		p11.NewAttribute(p11.CKA_DECRYPT, true),
		p11.NewAttribute(p11.CKA_LABEL, label),
	}
}

// genKey makes an AES-256 key with C_GenerateKey and returns its label.
// Changes to the template (by attribute type) replace the defaults.
func genKey(t testing.TB, token, pin string, changes ...*p11.Attribute) string {
	t.Helper()
	var r [8]byte
	rand.Read(r[:])
	label := "root-" + hex.EncodeToString(r[:])
	tmpl := keyTemplate(label)
	for _, c := range changes {
		for i, a := range tmpl {
			if a.Type == c.Type {
				tmpl[i] = c
			}
		}
	}
	s := admin(t, token, pin)
	if _, err := env.mod.ctx.GenerateKey(s, []*p11.Mechanism{p11.NewMechanism(p11.CKM_AES_KEY_GEN, nil)}, tmpl); err != nil {
		t.Fatal(err)
	}
	return label
}

// keyHandle finds the key with label on the test token.
func keyHandle(t testing.TB, s p11.SessionHandle, label string) p11.ObjectHandle {
	t.Helper()
	ctx := env.mod.ctx
	if err := ctx.FindObjectsInit(s, keySelector{label: label}.template()); err != nil {
		t.Fatal(err)
	}
	objs, _, err := ctx.FindObjects(s, 2)
	ctx.FindObjectsFinal(s)
	if err != nil || len(objs) != 1 {
		t.Fatalf("find key: %d found, %v", len(objs), err)
	}
	return objs[0]
}

func testURI(label string) string {
	return "pkcs11:token=" + testToken + ";object=" + label + "?module-path=" + softhsmPath + "&pin-source=file:" + env.pinFile
}

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
	p, err := openURI(t, testURI(genKey(t, testToken, testPIN)), o)
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
