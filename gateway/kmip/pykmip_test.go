package kmip

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// pykmipPython returns a Python interpreter that can import PyKMIP (Debian
// installs it for the system python3, which may not be first on PATH), or
// "" when there is none.
func pykmipPython() string {
	for _, py := range []string{"/usr/bin/python3", "python3"} {
		path, err := exec.LookPath(py)
		if err != nil {
			continue
		}
		if exec.Command(path, "-c", "import kmip.pie.client").Run() == nil {
			return path
		}
	}
	return ""
}

// TestPyKMIP drives the server with PyKMIP, a real external KMIP client,
// over TLS with client certificates, in KMIP 1.2, 1.4 and 2.0: create an
// AES-256 key, activate it, encrypt and decrypt (CBC through the high-level
// client, GCM with its tag through the lower-level one — in 1.2 the tag in
// Data —, GCM with the client's nonce and IV Length 12), get its attributes
// and attribute list, locate it by name, get it, re-key, register, check,
// modify and delete its Name, revoke it (after which it no longer encrypts)
// and destroy it.
func TestPyKMIP(t *testing.T) {
	py := pykmipPython()
	if py == "" {
		if os.Getenv("KRYPTON_REQUIRE_PEERS") != "" {
			t.Fatal("PyKMIP is not installed (Debian package python3-pykmip) and KRYPTON_REQUIRE_PEERS is set")
		}
		t.Skip("PyKMIP is not installed (Debian package python3-pykmip)")
	}
	e := newEnv(t, nil)
	dir := t.TempDir()
	cert, err := e.ca.IssueService("acme", "pykmip", 0)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath, caPath := filepath.Join(dir, "client.pem"), filepath.Join(dir, "client.key"), filepath.Join(dir, "ca.pem")
	if err := cert.WriteFiles(certPath, keyPath); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(caPath, e.ca.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	host, port, _ := net.SplitHostPort(e.addr)

	for _, v := range []string{"1.2", "1.4", "2.0"} {
		t.Run("v"+v, func(t *testing.T) {
			name := "pykmip-" + v
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			cmd := exec.CommandContext(ctx, py, filepath.Join("testdata", "pykmip_e2e.py"),
				host, port, certPath, keyPath, caPath, v, name)
			cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1")
			out, err := cmd.CombinedOutput()
			t.Logf("pykmip_e2e.py %s:\n%s", v, out)
			if err != nil {
				t.Fatalf("pykmip_e2e.py: %v", err)
			}
			lines := map[string]string{}
			for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
				if k, val, ok := strings.Cut(l, ": "); ok {
					lines[k] = val
				} else {
					lines[l] = ""
				}
			}
			uid := lines["create"]
			want := map[string]string{
				"discover-versions":                "2.0,1.4,1.3,1.2",
				"query":                            "ok",
				"activate":                         "ok",
				"encrypt-decrypt-cbc":              "ok",
				"encrypt-decrypt-gcm":              "ok",
				"decrypt-default-without-tag":      "INVALID_FIELD",
				"get-attributes":                   fmt.Sprintf("state=ACTIVE algorithm=AES length=256 name=%s", name),
				"locate":                           uid,
				"get":                              "32 bytes",
				"rekey":                            "ok",
				"register":                         "ok",
				"encrypt-decrypt-gcm-client-nonce": "ok",
				"check":                            "ok",
				"check-sign":                       "PERMISSION_DENIED",
				"modify-delete-attribute":          "ok",
				"revoke":                           "ok",
				"encrypt-after-revoke":             "PERMISSION_DENIED",
				"destroy":                          "state=DESTROYED",
			}
			if v == "1.2" {
				// The tag travels in Data: PyKMIP's high-level GCM pair works.
				want["decrypt-default-without-tag"] = "ok"
			}
			if v == "2.0" {
				want["encrypt-after-revoke"] = "WRONG_KEY_LIFECYCLE_STATE"
				want["check-sign"] = "INCOMPATIBLE_CRYPTOGRAPHIC_USAGE_MASK"
			}
			if uid == "" {
				t.Fatal("no key created")
			}
			for k, w := range want {
				if got, ok := lines[k]; !ok || got != w {
					t.Errorf("%s: got %q, want %q", k, got, w)
				}
			}
			if _, ok := lines["done"]; !ok {
				t.Error("script did not finish")
			}
		})
	}
}
