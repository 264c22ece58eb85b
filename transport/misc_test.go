package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/fsm"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
	"github.com/kryptonkms/krypton/wrap"
)

func TestLimits(t *testing.T) {
	for _, c := range []struct {
		name string
		err  error
		ok   bool
	}{
		{"batch 0", CheckBatch(0), false},
		{"batch 1", CheckBatch(1), true},
		{"batch 1024", CheckBatch(1024), true},
		{"batch 1025", CheckBatch(1025), false},
		{"batch -1", CheckBatch(-1), false},
		{"plaintext 32", CheckPlaintext(make([]byte, 32)), true},
		{"plaintext 31", CheckPlaintext(make([]byte, 31)), false},
		{"plaintext 64", CheckPlaintext(make([]byte, 64)), false},
		{"plaintext empty", CheckPlaintext(nil), false},
		{"context empty", CheckContext(nil), true},
		{"context max", CheckContext(make([]byte, wrap.MaxContextSize)), true},
		{"context max+1", CheckContext(make([]byte, wrap.MaxContextSize+1)), false},
		{"blob empty", CheckBlob(nil), false},
		{"blob 1", CheckBlob([]byte{1}), true},
		{"blob max", CheckBlob(make([]byte, wrap.MaxBlobSize)), true},
		{"blob max+1", CheckBlob(make([]byte, wrap.MaxBlobSize+1)), false},
		{"name ok", CheckName("tenant", "acme"), true},
		{"name bad", CheckName("tenant", "ACME/../x"), false},
	} {
		if c.ok {
			if c.err != nil {
				t.Errorf("%s: %v, want nil", c.name, c.err)
			}
			continue
		}
		st := status.Convert(c.err)
		if st.Code() != codes.InvalidArgument || !strings.HasPrefix(st.Message(), "transport: ") {
			t.Errorf("%s: %v, want InvalidArgument from transport", c.name, c.err)
		}
		if strings.Contains(st.Message(), "ACME") {
			t.Errorf("%s: message %q echoes the input", c.name, st.Message())
		}
	}
	if wrap.MaxBlobSize > MaxBlobWireSize {
		t.Errorf("wrap.MaxBlobSize %d exceeds the wire bound %d", wrap.MaxBlobSize, MaxBlobWireSize)
	}
}

func TestAdminHTTP(t *testing.T) {
	reg := prometheus.NewRegistry()
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "krypton_test_gauge", Help: "A test gauge."})
	g.Set(42)
	reg.MustRegister(g)
	healthy := errors.New("no quorum")
	var ready error = errors.New("leader 10.0.0.7:7410 unreachable")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a, err := ServeAdminHTTP(ln, AdminHTTPConfig{
		Gatherer: reg,
		Healthy:  func() error { return healthy },
		Ready:    func() error { return ready },
		Logger:   testLogger(t, nil),
	})
	if err != nil {
		t.Fatal(err)
	}
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}}
	get := func(path string) (int, string) {
		t.Helper()
		resp, err := client.Get("http://" + ln.Addr().String() + path)
		if err != nil {
			t.Fatalf("GET %s: %v", path, err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp.StatusCode, string(b)
	}
	if code, body := get("/metrics"); code != 200 || !strings.Contains(body, "krypton_test_gauge 42") {
		t.Errorf("/metrics: %d\n%s", code, body)
	}
	if code, body := get("/healthz"); code != http.StatusServiceUnavailable || strings.Contains(body, "quorum") {
		t.Errorf("/healthz while unhealthy: %d %q", code, body)
	}
	if code, body := get("/livez"); code != http.StatusServiceUnavailable || body != "unhealthy\n" {
		t.Errorf("/livez while unhealthy: %d %q", code, body)
	}
	healthy = nil
	if code, body := get("/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	if code, body := get("/livez"); code != 200 || body != "ok\n" {
		t.Errorf("/livez: %d %q", code, body)
	}
	// /readyz is unauthenticated: an error that is not a NotReady (whose text may name
	// addresses, node or key ids) is not shown, only "not ready".
	if code, body := get("/readyz"); code != http.StatusServiceUnavailable || body != "not ready\n" {
		t.Errorf("/readyz with a plain error: %d %q, want 503 \"not ready\"", code, body)
	}
	ready = NotReady("no serving lease")
	if code, body := get("/readyz"); code != http.StatusServiceUnavailable || body != "no serving lease\n" {
		t.Errorf("/readyz with a NotReady: %d %q", code, body)
	}
	ready = nil
	if code, body := get("/readyz"); code != 200 || body != "ready\n" {
		t.Errorf("/readyz: %d %q", code, body)
	}
	// The profiler is not on the plain-HTTP port: /debug/pprof/cmdline showed argv to anyone.
	for _, p := range []string{"/debug/pprof/", "/debug/pprof/cmdline", "/debug/pprof/heap"} {
		if code, _ := get(p); code != http.StatusNotFound {
			t.Errorf("%s on the admin HTTP port: %d, want 404", p, code)
		}
	}
	if code, _ := get("/nothing"); code != http.StatusNotFound {
		t.Errorf("/nothing: %d, want 404", code)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := a.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := a.Shutdown(ctx); !errors.Is(err, ErrShutdown) {
		t.Errorf("second Shutdown = %v, want ErrShutdown", err)
	}
	if _, err := client.Get("http://" + ln.Addr().String() + "/healthz"); err == nil {
		t.Error("admin endpoint still answers after Shutdown")
	}
	if _, err := ServeAdminHTTP(ln, AdminHTTPConfig{}); err == nil {
		t.Error("ServeAdminHTTP without a Gatherer succeeded")
	}
}

func TestLoadClientConfig(t *testing.T) {
	f := testPKI(t)
	dir := t.TempDir()
	p := func(name string) string { return filepath.Join(dir, name) }
	if err := f.ca.WriteFiles(p("ca.pem"), p("ca-key.pem")); err != nil {
		t.Fatal(err)
	}
	op, err := f.ca.IssueOperator("bob", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := op.WriteFiles(p("bob.pem"), p("bob-key.pem")); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadClientConfig(p("ca.pem"), p("bob.pem"), p("bob-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	_, addr := startServer(t, nil)
	cfg.Server = srvIdentity
	conn, err := Dial(t.Context(), addr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	st, err := kv1.NewAdminServiceClient(conn).Status(t.Context(), &kv1.StatusRequest{})
	if err != nil || st.NodeId != "spiffe://krypton/operator/bob" {
		t.Errorf("Status with loaded config = %v, %v", st, err)
	}

	for name, paths := range map[string][3]string{
		"missing CA":   {p("nope.pem"), p("bob.pem"), p("bob-key.pem")},
		"missing cert": {p("ca.pem"), p("nope.pem"), p("bob-key.pem")},
		"wrong key":    {p("ca.pem"), p("bob.pem"), p("ca-key.pem")},
	} {
		if _, err := LoadClientConfig(paths[0], paths[1], paths[2]); err == nil || !strings.HasPrefix(err.Error(), "transport: ") {
			t.Errorf("%s: %v", name, err)
		}
	}
	if _, err := Dial(t.Context(), addr, ClientConfig{Roots: f.ca.Pool(), Server: srvIdentity}); err == nil || !strings.Contains(err.Error(), "ClientConfig.Certificate") {
		t.Errorf("Dial without a certificate: %v", err)
	}
}

func ExampleToStatus() {
	err := fmt.Errorf("region: unwrap: %w", &fsm.Error{Err: fsm.ErrRevoked, Tenant: "acme", Service: "payments", Version: 3})
	st := status.Convert(ToStatus(err))
	fmt.Println(st.Code(), st.Message())

	st = status.Convert(ToStatus(fmt.Errorf("item 7: %w", wrap.ErrAuthentication)))
	fmt.Println(st.Code(), st.Message())

	st = status.Convert(ToStatus(errors.New("bolt: input/output error")))
	fmt.Println(st.Code(), st.Message())
	// Output:
	// FailedPrecondition fsm: revoked (tenant "acme", service "payments", version 3)
	// InvalidArgument wrap: blob does not authenticate
	// Internal transport: internal error
}

// The profiler answers only to an operator certificate of the CA: a client without a certificate,
// with a node or service certificate, or with another CA's, fails the handshake; cmdline is not
// served even to an operator.
func TestServePprof(t *testing.T) {
	f := testPKI(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a, err := ServePprof(ln, PprofConfig{Roots: f.ca.Pool(), Certificate: f.server, Logger: testLogger(t, nil)})
	if err != nil {
		t.Fatal(err)
	}
	defer a.Shutdown(context.Background())
	url := "https://" + ln.Addr().String()
	get := func(cert *tls.Certificate, path string) (int, error) {
		t.Helper()
		tc := &tls.Config{RootCAs: f.ca.Pool(), ServerName: "127.0.0.1", MinVersion: tls.VersionTLS13}
		if cert != nil {
			tc.Certificates = []tls.Certificate{*cert}
		}
		c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{TLSClientConfig: tc, DisableKeepAlives: true}}
		resp, err := c.Get(url + path)
		if err != nil {
			return 0, err
		}
		defer resp.Body.Close()
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.StatusCode, nil
	}
	if code, err := get(&f.operator, "/debug/pprof/heap"); err != nil || code != 200 {
		t.Fatalf("operator GET /debug/pprof/heap: %d %v, want 200", code, err)
	}
	if code, err := get(&f.operator, "/debug/pprof/cmdline"); err != nil || code != http.StatusNotFound {
		t.Errorf("operator GET /debug/pprof/cmdline: %d %v, want 404", code, err)
	}
	for name, cert := range map[string]*tls.Certificate{"no certificate": nil, "a node certificate": &f.node,
		"a service certificate": &f.service, "another CA's certificate": &f.foreign} {
		if code, err := get(cert, "/debug/pprof/cmdline"); err == nil {
			t.Errorf("%s: GET /debug/pprof/cmdline answered %d, want a refused handshake", name, code)
		}
		if code, err := get(cert, "/debug/pprof/heap"); err == nil {
			t.Errorf("%s: GET /debug/pprof/heap answered %d, want a refused handshake", name, code)
		}
	}
	// Plain HTTP gets nothing either.
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Get("http://" + ln.Addr().String() + "/debug/pprof/cmdline")
	if err == nil {
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode == 200 || strings.Contains(string(body), "transport.test") {
			t.Errorf("plain HTTP GET /debug/pprof/cmdline: %d %q", resp.StatusCode, body)
		}
	}
	if _, err := ServePprof(ln, PprofConfig{}); err == nil {
		t.Error("ServePprof without Roots and Certificate succeeded")
	}
}
