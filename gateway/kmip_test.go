package gateway_test

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kryptonkms/krypton/gateway"
	"github.com/kryptonkms/krypton/region/regiontest"
)

// pykmipPython returns a Python interpreter that can import PyKMIP, or "".
func pykmipPython() string {
	for _, py := range []string{"/usr/bin/python3", "python3"} {
		if path, err := exec.LookPath(py); err == nil && exec.Command(path, "-c", "import kmip.pie.client").Run() == nil {
			return path
		}
	}
	return ""
}

// refusalScript tries to create a key and prints how it went.
const refusalScript = `
import sys
from kmip.core import enums
from kmip.pie import client as pie_client
host, port, cert, key, ca = sys.argv[1:6]
c = pie_client.ProxyKmipClient(hostname=host, port=int(port), cert=cert, key=key, ca=ca,
    kmip_version=enums.KMIPVersion.KMIP_1_4)
with c:
    try:
        c.create(enums.CryptographicAlgorithm.AES, 256)
        print("create: ok")
    except Exception as e:
        print("create: refused:", e)
`

// TestKMIPThroughGateway drives the gateway's KMIP front end with PyKMIP against a real region:
// the KMIP front end's own end-to-end script (create, encrypt, decrypt, attributes, revoke,
// destroy), then a client of another tenant, which the gateway refuses.
func TestKMIPThroughGateway(t *testing.T) {
	py := pykmipPython()
	if py == "" {
		if os.Getenv("KRYPTON_REQUIRE_PEERS") != "" {
			t.Fatal("PyKMIP is not installed (Debian package python3-pykmip) and KRYPTON_REQUIRE_PEERS is set")
		}
		t.Skip("PyKMIP is not installed (Debian package python3-pykmip)")
	}
	r := regiontest.Start(t, 3)
	setupTenant(t, r, "acme", "db")
	setupTenant(t, r, "other", "db")
	g := startGateway(t, r, "acme", "db", func(c *gateway.Config) { c.KMIPAddr = "127.0.0.1:0" })
	host, port, _ := net.SplitHostPort(g.KMIPAddr().String())

	dir := t.TempDir()
	caPath := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caPath, r.CA.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	certFor := func(tenant string) (string, string) {
		cert, err := r.CA.IssueService(tenant, "db", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		c, k := filepath.Join(dir, tenant+".pem"), filepath.Join(dir, tenant+".key")
		if err := cert.WriteFiles(c, k); err != nil {
			t.Fatal(err)
		}
		return c, k
	}
	run := func(args ...string) map[string]string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, py, args...)
		cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1")
		out, err := cmd.CombinedOutput()
		t.Logf("%s:\n%s", filepath.Base(args[0]), out)
		if err != nil {
			t.Fatalf("%s: %v", args[0], err)
		}
		lines := map[string]string{}
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			k, v, _ := strings.Cut(l, ": ")
			lines[k] = v
		}
		return lines
	}

	cert, key := certFor("acme")
	lines := run(filepath.Join("kmip", "testdata", "pykmip_e2e.py"), host, port, cert, key, caPath, "1.4", "through-gateway")
	for k, want := range map[string]string{
		"encrypt-decrypt-gcm":  "ok",
		"get":                  "32 bytes",
		"encrypt-after-revoke": "PERMISSION_DENIED",
		"destroy":              "state=DESTROYED",
	} {
		if lines[k] != want {
			t.Errorf("%s: got %q, want %q", k, lines[k], want)
		}
	}
	if _, ok := lines["done"]; !ok {
		t.Error("the script did not finish")
	}

	script := filepath.Join(dir, "refusal.py")
	if err := os.WriteFile(script, []byte(refusalScript), 0o644); err != nil {
		t.Fatal(err)
	}
	cert, key = certFor("other")
	if got := run(script, host, port, cert, key, caPath)["create"]; !strings.HasPrefix(got, "refused") {
		t.Errorf("a KMIP client of another tenant: create %q, want refused", got)
	}
}
