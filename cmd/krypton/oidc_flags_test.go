package main

import (
	"context"
	"flag"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"

	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
	"github.com/kryptonkms/krypton/transport/oidctest"
)

func parseFlags(t *testing.T, declare func(*flag.FlagSet), args ...string) {
	t.Helper()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	declare(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatalf("%v: %v", args, err)
	}
}

func TestOIDCFlags(t *testing.T) {
	var off oidcFlags
	parseFlags(t, off.declare)
	if v, err := off.verifier(nil); v != nil || err != nil {
		t.Fatalf("without -oidc-issuer: %v, %v", v, err)
	}

	var on oidcFlags
	parseFlags(t, on.declare, "-oidc-issuer", "https://idp.example.com/realms/ops", "-oidc-audience", "krypton",
		"-oidc-role-claim", "roles", "-oidc-role-map", "admin=krypton-admins,viewer=auditors", "-oidc-role-map", "viewer=sre")
	cfg, ok, err := on.config(nil)
	if err != nil || !ok {
		t.Fatal(err)
	}
	want := map[string]transport.Role{"krypton-admins": transport.RoleAdmin, "auditors": transport.RoleViewer, "sre": transport.RoleViewer}
	if cfg.Issuer != "https://idp.example.com/realms/ops" || cfg.Audience != "krypton" || cfg.RoleClaim != "roles" || len(cfg.RoleMap) != 3 {
		t.Fatalf("config %+v", cfg)
	}
	for k, v := range want {
		if cfg.RoleMap[k] != v {
			t.Fatalf("RoleMap[%q] = %q, want %q", k, cfg.RoleMap[k], v)
		}
	}
	v, err := on.verifier(nil)
	if err != nil || v == nil {
		t.Fatalf("verifier: %v, %v", v, err)
	}
	v.Close()

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-oidc-audience", "a"}, "need -oidc-issuer"},
		{[]string{"-oidc-issuer", "https://idp", "-oidc-role-map", "admin=x"}, "needs -oidc-audience"},
		{[]string{"-oidc-issuer", "https://idp", "-oidc-audience", "a"}, "needs -oidc-role-map"},
		{[]string{"-oidc-issuer", "http://idp", "-oidc-audience", "a", "-oidc-role-map", "admin=x"}, "https"},
		{[]string{"-oidc-issuer", "https://idp", "-oidc-audience", "a", "-oidc-role-map", "admin=x,viewer=x"}, "mapped to both"},
	} {
		var f oidcFlags
		parseFlags(t, f.declare, tc.args...)
		if _, err := f.verifier(nil); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.args, err, tc.want)
		}
	}
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var bad oidcFlags
	bad.declare(fs)
	for _, arg := range []string{"root=x", "admin", "admin="} {
		if err := fs.Parse([]string{"-oidc-role-map", arg}); err == nil {
			t.Errorf("-oidc-role-map %q accepted", arg)
		}
	}
}

func TestAuditFlags(t *testing.T) {
	var off auditFlags
	parseFlags(t, off.declare)
	if sc, err := off.syslogConfig(nil); sc != nil || err != nil {
		t.Fatalf("without -audit-syslog: %v, %v", sc, err)
	}
	dir := t.TempDir()
	ca, err := pki.NewCA("siem CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, ca.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	cl, err := ca.IssueNode("n1", pki.NodeOptions{Region: "test"})
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile := filepath.Join(dir, "c.pem"), filepath.Join(dir, "k.pem")
	if err := cl.WriteFiles(certFile, keyFile); err != nil {
		t.Fatal(err)
	}
	var on auditFlags
	parseFlags(t, on.declare, "-audit-syslog", "siem.example.com:6514", "-audit-syslog-ca", caFile,
		"-audit-syslog-cert", certFile, "-audit-syslog-key", keyFile, "-audit-syslog-queue", "100")
	sc, err := on.syslogConfig(nil)
	if err != nil || sc == nil {
		t.Fatalf("syslogConfig: %v, %v", sc, err)
	}
	if sc.Addr != "siem.example.com:6514" || sc.QueueSize != 100 || sc.TLS.RootCAs == nil || len(sc.TLS.Certificates) != 1 {
		t.Fatalf("config %+v", sc)
	}
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"-audit-syslog-ca", caFile}, "need -audit-syslog"},
		{[]string{"-audit-syslog", "siem"}, "host:port"},
		{[]string{"-audit-syslog", "siem:6514", "-audit-syslog-cert", certFile}, "go together"},
		{[]string{"-audit-syslog", "siem:6514", "-audit-syslog-ca", filepath.Join(dir, "none")}, "-audit-syslog-ca"},
		{[]string{"-audit-syslog", "siem:6514", "-audit-syslog-queue", "0"}, "must be positive"},
	} {
		var f auditFlags
		parseFlags(t, f.declare, tc.args...)
		if _, err := f.syslogConfig(nil); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want %q", tc.args, err, tc.want)
		}
	}
}

// tokenAdminService answers Status with the caller's identity.
type tokenAdminService struct {
	kv1.UnimplementedAdminServiceServer
}

func (tokenAdminService) Status(ctx context.Context, _ *kv1.StatusRequest) (*kv1.StatusResponse, error) {
	id, _ := transport.IdentityFromContext(ctx)
	return &kv1.StatusResponse{NodeId: id.String()}, nil
}

// TestCLIToken runs operator commands with -token-file and KRYPTON_TOKEN against a real server
// with an OIDC verifier, the tokens signed by an in-process issuer.
func TestCLIToken(t *testing.T) {
	iss, err := oidctest.Start(jose.RS256)
	if err != nil {
		t.Fatal(err)
	}
	defer iss.Close()
	var of oidcFlags
	issCA := filepath.Join(t.TempDir(), "issuer-ca.pem")
	if err := os.WriteFile(issCA, iss.RootsPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	parseFlags(t, of.declare, "-oidc-issuer", iss.URL(), "-oidc-audience", "krypton-cli", "-oidc-role-map", "admin=ops,viewer=audit", "-oidc-ca", issCA)
	v, err := of.verifier(nil)
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()

	dir := t.TempDir()
	ca, err := pki.NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, ca.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	node, err := ca.IssueNode("n1", pki.NodeOptions{Region: "test"})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := transport.NewServer(transport.ServerConfig{Roots: ca.Pool(), Certificate: node.TLSCertificate(), OIDC: v})
	if err != nil {
		t.Fatal(err)
	}
	kv1.RegisterAdminServiceServer(srv, tokenAdminService{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	defer func() { srv.Stop(); <-served }()

	sign := func(group string) string {
		tok, err := iss.Sign(iss.Claims("carol", "krypton-cli", time.Hour, map[string]any{"groups": []string{group}}))
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	viewerFile := filepath.Join(dir, "viewer.jwt")
	if err := os.WriteFile(viewerFile, []byte(sign("audit")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	krypton := func(args ...string) (string, string, int) {
		stdout, _ := os.CreateTemp(dir, "stdout")
		stderr, _ := os.CreateTemp(dir, "stderr")
		code := run(context.Background(), args, stdout, stderr)
		return readBack(t, stdout), readBack(t, stderr), code
	}
	conn := []string{"-addr", ln.Addr().String(), "-ca-cert", caFile, "-timeout", "20s"}

	// A viewer's token from a file: status works and names the token's subject.
	out, errOut, code := krypton(append(append([]string{"status"}, conn...), "-token-file", viewerFile, "-format", "json")...)
	if code != 0 || !strings.Contains(out, `"node_id": "oidc:`+iss.URL()+`#carol"`) {
		t.Fatalf("status with -token-file: exit %d\n%s%s", code, out, errOut)
	}
	// A viewer may not change anything.
	_, errOut, code = krypton(append(append([]string{"operator", "raft", "remove-peer"}, conn...), "-token-file", viewerFile, "n2")...)
	if code != 1 || !strings.Contains(errOut, "PermissionDenied") {
		t.Fatalf("remove-peer as viewer: exit %d, %s", code, errOut)
	}
	// KRYPTON_TOKEN carries the token itself.
	t.Setenv("KRYPTON_TOKEN", sign("ops"))
	out, errOut, code = krypton(append([]string{"status"}, conn...)...)
	if code != 0 || !strings.Contains(out, "oidc:") {
		t.Fatalf("status with KRYPTON_TOKEN: exit %d\n%s%s", code, out, errOut)
	}
	// A missing token file is named.
	_, errOut, code = krypton(append(append([]string{"status"}, conn...), "-token-file", filepath.Join(dir, "none"))...)
	if code != 1 || !strings.Contains(errOut, "-token-file") {
		t.Fatalf("missing token file: exit %d, %s", code, errOut)
	}
}
