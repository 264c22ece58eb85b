package pki

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// writePair writes c's files as `krypton certs` does (an atomic rename each).
func writePair(t *testing.T, c *Certificate, certPath, keyPath string) {
	t.Helper()
	if err := c.WriteFiles(certPath, keyPath); err != nil {
		t.Fatal(err)
	}
}

func serialOf(s *Source) string { return s.Current().Certificate.Leaf.SerialNumber.String() }

// TestReloaderRefusesBadFiles: a reload takes a new certificate only if its files parse, its key
// matches, it is valid now, it names the identity the process started with and it chains to the
// CA bundle; otherwise the old certificate stays in use, the refusal is logged naming the file and
// counted. A good new certificate (a new serial, same identity) is taken.
func TestReloaderRefusesBadFiles(t *testing.T) {
	dir := t.TempDir()
	ca, err := NewCA("reload test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.pem")
	if err := ca.WriteFiles(caFile, filepath.Join(dir, "ca-key.pem")); err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "node.pem"), filepath.Join(dir, "node-key.pem")
	issue := func(id, region string) *Certificate {
		c, err := ca.IssueNode(id, NodeOptions{Region: region})
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	first := issue("n1", "eu")
	writePair(t, first, certFile, keyFile)
	var logs bytes.Buffer
	r, err := NewReloader(ReloaderConfig{CAFile: caFile, Pairs: []ReloadPair{{Name: "node", CertFile: certFile, KeyFile: keyFile}},
		Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	src := r.Source(0)
	want := first.Leaf().SerialNumber.String()
	if serialOf(src) != want {
		t.Fatal("the reloader does not hold the certificate it loaded")
	}

	other, err := NewCA("another CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := other.IssueNode("n1", NodeOptions{Region: "eu"})
	if err != nil {
		t.Fatal(err)
	}
	gw, err := ca.IssueGateway("acme", "n1", NodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	good := issue("n1", "eu")
	refused := uint64(0)
	for _, c := range []struct {
		name  string
		write func()
		log   string
	}{
		{"an unparsable certificate", func() {
			os.WriteFile(certFile, []byte("-----BEGIN CERTIFICATE-----\nnot base64\n-----END CERTIFICATE-----\n"), 0o644)
		}, "node.pem"},
		{"a key that does not match", func() {
			writePair(t, good, certFile, keyFile)
			writePair(t, issue("n1", "eu"), filepath.Join(dir, "x.pem"), keyFile)
		}, "does not match"},
		{"another node's certificate", func() { writePair(t, issue("n2", "eu"), certFile, keyFile) }, "this process runs as"},
		{"a node of another region", func() { writePair(t, issue("n1", "us"), certFile, keyFile) }, "this process runs as"},
		{"a gateway's certificate", func() { writePair(t, gw, certFile, keyFile) }, "this process runs as"},
		{"a certificate of another CA", func() { writePair(t, foreign, certFile, keyFile) }, "does not chain"},
		{"an expired certificate", func() {
			writePair(t, good, certFile, keyFile)
			r.now = func() time.Time { return good.Leaf().NotAfter.Add(time.Minute) }
		}, "not valid now"},
	} {
		logs.Reset()
		c.write()
		if err := r.Reload(); err == nil {
			t.Errorf("%s: reloaded", c.name)
		}
		r.now = time.Now
		refused++
		if got := serialOf(src); got != want {
			t.Errorf("%s: the certificate in use changed to serial %s", c.name, got)
		}
		if !strings.Contains(logs.String(), "certificate reload refused") || !strings.Contains(logs.String(), c.log) {
			t.Errorf("%s: log %q, want the refusal naming %q", c.name, logs.String(), c.log)
		}
		if strings.Contains(logs.String(), "PRIVATE KEY") {
			t.Errorf("%s: the log holds key material", c.name)
		}
		if r.Stats().Refused.Load() != refused {
			t.Errorf("%s: refused = %d, want %d", c.name, r.Stats().Refused.Load(), refused)
		}
	}
	writePair(t, good, certFile, keyFile)
	if err := r.Reload(); err != nil {
		t.Fatalf("a good new certificate: %v", err)
	}
	if serialOf(src) != good.Leaf().SerialNumber.String() || r.Stats().OK.Load() != 1 {
		t.Fatalf("the good certificate is not in use (serial %s, ok %d)", serialOf(src), r.Stats().OK.Load())
	}
	// Expiring within the warning window is logged.
	logs.Reset()
	r.cfg.ExpiryWarning = 2 * time.Hour
	if err := r.Reload(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(logs.String(), "certificate expires soon") {
		t.Errorf("no expiry warning within the window: %q", logs.String())
	}
}

// TestReloaderWatchesSymlinkSwap: the kubelet (and cert-manager's CSI driver) update a mounted
// Secret by writing a new timestamped directory and renaming a ..data symlink over the old one;
// the files the process was given are symlinks through ..data. Watch sees the swap and the new
// certificate is used; a handshake through Server presents it.
func TestReloaderWatchesSymlinkSwap(t *testing.T) {
	dir := t.TempDir()
	ca, err := NewCA("reload test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	version := func(name string, c *Certificate) {
		d := filepath.Join(dir, name)
		if err := os.Mkdir(d, 0o700); err != nil {
			t.Fatal(err)
		}
		if err := ca.WriteFiles(filepath.Join(d, "ca.crt"), filepath.Join(d, "ca.key")); err != nil {
			t.Fatal(err)
		}
		writePair(t, c, filepath.Join(d, "tls.crt"), filepath.Join(d, "tls.key"))
		tmp := filepath.Join(dir, "..data_tmp")
		if err := os.Symlink(name, tmp); err != nil {
			t.Fatal(err)
		}
		if err := os.Rename(tmp, filepath.Join(dir, "..data")); err != nil {
			t.Fatal(err)
		}
	}
	c1, _ := ca.IssueNode("n1", NodeOptions{Region: "eu"})
	version("..v1", c1)
	for _, f := range []string{"ca.crt", "tls.crt", "tls.key"} {
		if err := os.Symlink(filepath.Join("..data", f), filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	r, err := NewReloader(ReloaderConfig{CAFile: filepath.Join(dir, "ca.crt"),
		Pairs: []ReloadPair{{Name: "node", CertFile: filepath.Join(dir, "tls.crt"), KeyFile: filepath.Join(dir, "tls.key")}}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.Watch(ctx, 10*time.Millisecond) }()
	defer func() { cancel(); <-done }()
	c2, _ := ca.IssueNode("n1", NodeOptions{Region: "eu"})
	// The watch may start after the swap: swap again until it is seen.
	deadline := time.Now().Add(30 * time.Second)
	for i := 2; serialOf(r.Source(0)) != c2.Leaf().SerialNumber.String(); i++ {
		if time.Now().After(deadline) {
			t.Fatal("the ..data swap was not picked up")
		}
		version("..v"+string(rune('0'+i%10))+time.Now().Format("150405.000000000"), c2)
		waitUntil := time.Now().Add(time.Second)
		for time.Now().Before(waitUntil) && serialOf(r.Source(0)) != c2.Leaf().SerialNumber.String() {
			time.Sleep(10 * time.Millisecond)
		}
	}
	cfg := r.Source(0).Server(ServerTLSConfig(ca.Pool(), c1.TLSCertificate()))
	got, err := cfg.GetConfigForClient(nil)
	if err != nil || got.Certificates[0].Leaf.SerialNumber.Cmp(c2.Leaf().SerialNumber) != 0 {
		t.Fatalf("a new handshake would present %v (%v), want the new certificate", got.Certificates[0].Leaf.SerialNumber, err)
	}
}
