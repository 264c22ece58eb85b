package transport

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/reflect/protoreflect"

	"github.com/kryptonkms/krypton/internal/pki"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
	"github.com/kryptonkms/krypton/transport/oidctest"
)

const testAudience = "krypton-cli"

// tokenAdmin is a test AdminService: Status (a read) and CreateTenant (a
// write) answer with the caller's identity.
type tokenAdmin struct {
	kv1.UnimplementedAdminServiceServer
}

func (tokenAdmin) Status(ctx context.Context, _ *kv1.StatusRequest) (*kv1.StatusResponse, error) {
	id, _ := IdentityFromContext(ctx)
	return &kv1.StatusResponse{NodeId: id.String()}, nil
}

func (tokenAdmin) CreateTenant(ctx context.Context, _ *kv1.CreateTenantRequest) (*kv1.Tenant, error) {
	id, _ := IdentityFromContext(ctx)
	return &kv1.Tenant{Name: id.String()}, nil
}

// tokenGovernance is a test GovernanceService: Status (a read) and the node
// feed's ReportCursor.
type tokenGovernance struct {
	kv1.UnimplementedGovernanceServiceServer
}

func (tokenGovernance) Status(ctx context.Context, _ *kv1.GovernanceStatusRequest) (*kv1.GovernanceStatusResponse, error) {
	id, _ := IdentityFromContext(ctx)
	return &kv1.GovernanceStatusResponse{NodeId: id.String()}, nil
}

func (tokenGovernance) ReportCursor(context.Context, *kv1.ReportCursorRequest) (*kv1.ReportCursorResponse, error) {
	return &kv1.ReportCursorResponse{}, nil
}

type auditCall struct {
	method string
	id     pki.Identity
	code   codes.Code
}

// oidcEnv is a running issuer and a server that accepts its tokens.
type oidcEnv struct {
	iss  *oidctest.Issuer
	addr string

	mu      sync.Mutex
	audited []auditCall
}

func (e *oidcEnv) audits() []auditCall {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]auditCall(nil), e.audited...)
}

var testRoleMap = map[string]Role{"krypton-admins": RoleAdmin, "krypton-viewers": RoleViewer}

// startOIDC starts an issuer signing with alg and a transport server with
// an OIDC verifier for it; edit may change the verifier's configuration.
func startOIDC(t *testing.T, alg jose.SignatureAlgorithm, edit func(*OIDCConfig)) *oidcEnv {
	t.Helper()
	iss, err := oidctest.Start(alg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(iss.Close)
	env := &oidcEnv{iss: iss}
	ocfg := OIDCConfig{
		Issuer: iss.URL(), Audience: testAudience, RoleClaim: "groups",
		RoleMap: testRoleMap, Roots: iss.Roots(), Logger: testLogger(t, nil),
	}
	if edit != nil {
		edit(&ocfg)
	}
	v, err := NewOIDCVerifier(ocfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close)
	env.addr = startTokenServer(t, v, func(_ context.Context, method string, id pki.Identity, code codes.Code) {
		env.mu.Lock()
		env.audited = append(env.audited, auditCall{method, id, code})
		env.mu.Unlock()
	})
	return env
}

func startTokenServer(t *testing.T, v *OIDCVerifier, audit AuditFunc) string {
	t.Helper()
	f := testPKI(t)
	s, err := NewServer(ServerConfig{Roots: f.ca.Pool(), Certificate: f.server, OIDC: v, Audit: audit, Logger: testLogger(t, nil)})
	if err != nil {
		t.Fatal(err)
	}
	kv1.RegisterWrapServiceServer(s, wrapServer{})
	kv1.RegisterAdminServiceServer(s, tokenAdmin{})
	kv1.RegisterNodeServiceServer(s, nodeServer{})
	kv1.RegisterGovernanceServiceServer(s, tokenGovernance{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- s.Serve(ln) }()
	t.Cleanup(func() {
		s.Stop()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return ln.Addr().String()
}

// dialToken connects with tok as bearer token and cert (may be empty).
func dialToken(t *testing.T, addr string, tok string, cert tls.Certificate) *grpc.ClientConn {
	t.Helper()
	cfg := ClientConfig{Roots: testPKI(t).ca.Pool(), Certificate: cert, Server: srvIdentity}
	if tok != "" {
		cfg.Token = StaticToken(tok)
	}
	var conn *grpc.ClientConn
	var err error
	if tok == "" && len(cert.Certificate) == 0 {
		// Dial refuses a client with neither; dial as an anonymous TLS client.
		conn, err = grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(
			&tls.Config{MinVersion: tls.VersionTLS13, RootCAs: cfg.Roots})))
	} else {
		conn, err = Dial(t.Context(), addr, cfg)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

func (e *oidcEnv) token(t *testing.T, sub string, groups ...string) string {
	t.Helper()
	tok, err := e.iss.Sign(e.iss.Claims(sub, testAudience, time.Hour, map[string]any{"groups": groups}))
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func wantCode(t *testing.T, what string, err error, want codes.Code) {
	t.Helper()
	if got := status.Code(err); got != want {
		t.Fatalf("%s: code %v (%v), want %v", what, got, err, want)
	}
}

func TestOIDCRoles(t *testing.T) {
	for _, alg := range []jose.SignatureAlgorithm{jose.RS256, jose.ES256} {
		t.Run(string(alg), func(t *testing.T) {
			env := startOIDC(t, alg, nil)
			ctx := t.Context()

			// An admin writes; the handler sees the token's subject and issuer.
			admin := kv1.NewAdminServiceClient(dialToken(t, env.addr, env.token(t, "alice@example.com", "krypton-admins"), tls.Certificate{}))
			ten, err := admin.CreateTenant(ctx, &kv1.CreateTenantRequest{})
			if err != nil {
				t.Fatalf("admin CreateTenant: %v", err)
			}
			if want := "oidc:" + env.iss.URL() + "#alice@example.com"; ten.Name != want {
				t.Fatalf("handler saw %q, want %q", ten.Name, want)
			}
			if _, err := admin.Status(ctx, &kv1.StatusRequest{}); err != nil {
				t.Fatalf("admin Status: %v", err)
			}

			// A viewer reads, on both operator services, but may not write.
			vconn := dialToken(t, env.addr, env.token(t, "victor", "krypton-viewers", "unrelated"), tls.Certificate{})
			viewer := kv1.NewAdminServiceClient(vconn)
			if _, err := viewer.Status(ctx, &kv1.StatusRequest{}); err != nil {
				t.Fatalf("viewer Status: %v", err)
			}
			if _, err := kv1.NewGovernanceServiceClient(vconn).Status(ctx, &kv1.GovernanceStatusRequest{}); err != nil {
				t.Fatalf("viewer governance Status: %v", err)
			}
			_, err = viewer.CreateTenant(ctx, &kv1.CreateTenantRequest{})
			wantCode(t, "viewer CreateTenant", err, codes.PermissionDenied)

			// The refusal is audited under the token's identity, never the token.
			var found bool
			for _, a := range env.audits() {
				if a.method == "/krypton.v1.AdminService/CreateTenant" && a.code == codes.PermissionDenied {
					found = true
					if a.id.Issuer != env.iss.URL() || a.id.Operator != "victor" || a.id.Kind != pki.KindOperator {
						t.Fatalf("audited identity %+v, want victor of %s", a.id, env.iss.URL())
					}
				}
			}
			if !found {
				t.Fatal("viewer's refused write was not audited")
			}
		})
	}
}

// forge builds a compact JWS from a header and claims and a signature
// segment, without signing.
func forge(header, claims map[string]any, sig string) string {
	h, _ := json.Marshal(header)
	c, _ := json.Marshal(claims)
	enc := base64.RawURLEncoding.EncodeToString
	return enc(h) + "." + enc(c) + "." + sig
}

func TestOIDCRefusals(t *testing.T) {
	env := startOIDC(t, jose.RS256, nil)
	iss := env.iss
	sign := func(claims map[string]any) string {
		tok, err := iss.Sign(claims)
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}
	admins := map[string]any{"groups": []string{"krypton-admins"}}
	claims := func(mod func(map[string]any)) map[string]any {
		c := iss.Claims("mallory", testAudience, time.Hour, admins)
		if mod != nil {
			mod(c)
		}
		return c
	}
	rogue, err := oidctest.NewKey("k1", jose.RS256) // same kid, unknown key
	if err != nil {
		t.Fatal(err)
	}
	rogueKid, err := oidctest.NewKey("rogue", jose.RS256)
	if err != nil {
		t.Fatal(err)
	}
	mustRogue := func(k *oidctest.Key) string {
		tok, err := k.Sign(claims(nil))
		if err != nil {
			t.Fatal(err)
		}
		return tok
	}

	// tampered: a viewer's token whose payload now claims admin, signature kept.
	viewerTok := sign(iss.Claims("mallory", testAudience, time.Hour, map[string]any{"groups": []string{"krypton-viewers"}}))
	parts := strings.Split(viewerTok, ".")
	tampered := strings.Split(forge(map[string]any{}, claims(nil), ""), ".")[1]
	tamperedTok := parts[0] + "." + tampered + "." + parts[2]

	cases := []struct {
		name string
		tok  string
		want codes.Code
	}{
		{"expired", sign(claims(func(c map[string]any) { c["exp"] = time.Now().Add(-time.Minute).Unix() })), codes.Unauthenticated},
		{"not yet valid", sign(claims(func(c map[string]any) { c["nbf"] = time.Now().Add(time.Hour).Unix() })), codes.Unauthenticated},
		{"wrong audience", sign(claims(func(c map[string]any) { c["aud"] = "another-app" })), codes.Unauthenticated},
		{"wrong issuer", sign(claims(func(c map[string]any) { c["iss"] = "https://evil.example.com" })), codes.Unauthenticated},
		{"no subject", sign(claims(func(c map[string]any) { delete(c, "sub") })), codes.Unauthenticated},
		{"unsigned (alg none)", forge(map[string]any{"alg": "none", "typ": "JWT"}, claims(nil), ""), codes.Unauthenticated},
		{"HS256 with a guessable secret", forgeHS256(t, claims(nil)), codes.Unauthenticated},
		{"tampered", tamperedTok, codes.Unauthenticated},
		{"unknown key, known kid", mustRogue(rogue), codes.Unauthenticated},
		{"unknown key, unknown kid", mustRogue(rogueKid), codes.Unauthenticated},
		{"not a JWT", "hello", codes.Unauthenticated},
		{"no role claim", sign(iss.Claims("mallory", testAudience, time.Hour, nil)), codes.PermissionDenied},
		{"unmapped roles", sign(iss.Claims("mallory", testAudience, time.Hour, map[string]any{"groups": []string{"krypton-admin", "admins"}})), codes.PermissionDenied},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			conn := dialToken(t, env.addr, tc.tok, tls.Certificate{})
			_, err := kv1.NewAdminServiceClient(conn).Status(t.Context(), &kv1.StatusRequest{})
			wantCode(t, "Status", err, tc.want)
			if strings.Contains(status.Convert(err).Message(), tc.tok) {
				t.Fatal("the refusal echoes the token")
			}
		})
	}
	// None of the refused tokens names anyone in the audit log.
	for _, a := range env.audits() {
		if a.code == codes.Unauthenticated && a.id != (pki.Identity{}) {
			t.Fatalf("an unauthenticated call was audited as %v", a.id)
		}
	}
}

// forgeHS256 signs claims with HMAC under the empty-ish key an attacker
// might hope a verifier would accept.
func forgeHS256(t *testing.T, claims map[string]any) string {
	t.Helper()
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.HS256, Key: []byte("0123456789abcdef0123456789abcdef")}, nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(claims)
	jws, err := s.Sign(b)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := jws.CompactSerialize()
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

func TestOIDCTokenOnlyForOperatorRPCs(t *testing.T) {
	env := startOIDC(t, jose.ES256, nil)
	f := testPKI(t)
	ctx := t.Context()
	tok := env.token(t, "alice", "krypton-admins")

	// A token, even an admin's, does not open the wrap or node services,
	// nor the node methods of governance; with or without a certificate.
	for _, cert := range []tls.Certificate{{}, f.service} {
		conn := dialToken(t, env.addr, tok, cert)
		_, err := kv1.NewWrapServiceClient(conn).Wrap(ctx, &kv1.WrapRequest{
			Key: &kv1.KeyRef{Tenant: "acme", Service: "payments"}, Plaintext: make([]byte, 32)})
		wantCode(t, "token Wrap", err, codes.PermissionDenied)
		_, err = kv1.NewNodeServiceClient(conn).RenewLease(ctx, &kv1.RenewLeaseRequest{NodeId: "node-2"})
		wantCode(t, "token RenewLease", err, codes.PermissionDenied)
		_, err = kv1.NewGovernanceServiceClient(conn).ReportCursor(ctx, &kv1.ReportCursorRequest{})
		wantCode(t, "token ReportCursor", err, codes.PermissionDenied)
	}

	// Without a certificate or a token, nothing is admitted.
	anon := dialToken(t, env.addr, "", tls.Certificate{})
	_, err := kv1.NewAdminServiceClient(anon).Status(ctx, &kv1.StatusRequest{})
	wantCode(t, "anonymous Status", err, codes.Unauthenticated)
	_, err = kv1.NewWrapServiceClient(anon).Wrap(ctx, &kv1.WrapRequest{Key: &kv1.KeyRef{Tenant: "acme", Service: "payments"}, Plaintext: make([]byte, 32)})
	wantCode(t, "anonymous Wrap", err, codes.Unauthenticated)

	// Certificates work as before on a server with OIDC.
	_, err = kv1.NewWrapServiceClient(dial(t, env.addr, f.service)).Wrap(ctx, &kv1.WrapRequest{
		Key: &kv1.KeyRef{Tenant: "acme", Service: "payments"}, Plaintext: make([]byte, 32)})
	if err != nil {
		t.Fatalf("service certificate Wrap: %v", err)
	}
	st, err := kv1.NewAdminServiceClient(dial(t, env.addr, f.operator)).CreateTenant(ctx, &kv1.CreateTenantRequest{})
	if err != nil || st.Name != "spiffe://krypton/operator/alice" {
		t.Fatalf("operator certificate CreateTenant: %v, %v", st, err)
	}
	// A certificate from another CA is still refused. Go's TLS client does
	// not even send it (the server names its CAs in the certificate
	// request), so the connection is anonymous: Unauthenticated.
	conn, err := Dial(ctx, env.addr, ClientConfig{Roots: f.ca.Pool(), Certificate: f.foreign, Server: srvIdentity})
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_, err = kv1.NewAdminServiceClient(conn).Status(ctx, &kv1.StatusRequest{})
	wantCode(t, "foreign certificate", err, codes.Unauthenticated)
}

func TestOIDCKeyRotation(t *testing.T) {
	env := startOIDC(t, jose.RS256, nil)
	ctx := t.Context()
	status1 := func(tok string) error {
		_, err := kv1.NewAdminServiceClient(dialToken(t, env.addr, tok, tls.Certificate{})).Status(ctx, &kv1.StatusRequest{})
		return err
	}
	old := env.token(t, "alice", "krypton-viewers")
	if err := status1(old); err != nil {
		t.Fatalf("before rotation: %v", err)
	}
	fetches := env.iss.JWKSFetches()

	k2, err := oidctest.NewKey("k2", jose.ES256)
	if err != nil {
		t.Fatal(err)
	}
	env.iss.Rotate(k2, false) // the old key is withdrawn at once
	if err := status1(env.token(t, "alice", "krypton-viewers")); err != nil {
		t.Fatalf("token of the new key: %v", err)
	}
	if env.iss.JWKSFetches() == fetches {
		t.Fatal("the new kid did not make the verifier fetch the JWKS again")
	}
	// The old key is no longer published: its tokens are refused once the
	// cache has been refreshed.
	wantCode(t, "token of the withdrawn key", status1(old), codes.Unauthenticated)
}

// TestOIDCIssuerRateLimit: tokens with unknown keys do not make the server
// fetch the issuer's keys more than the limit allows.
func TestOIDCIssuerRateLimit(t *testing.T) {
	env := startOIDC(t, jose.RS256, func(c *OIDCConfig) { c.IssuerRefreshInterval = time.Hour })
	good := env.token(t, "alice", "krypton-viewers")
	conn := func(tok string) kv1.AdminServiceClient {
		return kv1.NewAdminServiceClient(dialToken(t, env.addr, tok, tls.Certificate{}))
	}
	if _, err := conn(good).Status(t.Context(), &kv1.StatusRequest{}); err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		k, err := oidctest.NewKey(fmt.Sprintf("rogue-%d", i), jose.ES256)
		if err != nil {
			t.Fatal(err)
		}
		tok, err := k.Sign(env.iss.Claims("mallory", testAudience, time.Hour, map[string]any{"groups": []string{"krypton-admins"}}))
		if err != nil {
			t.Fatal(err)
		}
		_, err = conn(tok).Status(t.Context(), &kv1.StatusRequest{})
		wantCode(t, "unknown key", err, codes.Unauthenticated)
	}
	// One discovery and one JWKS fetch for the good token, then at most
	// the rest of the burst of four.
	if n := env.iss.JWKSFetches(); n > 3 {
		t.Fatalf("%d JWKS fetches for 20 tokens of unknown keys", n)
	}
	// Known keys still verify without the issuer.
	if _, err := conn(good).Status(t.Context(), &kv1.StatusRequest{}); err != nil {
		t.Fatalf("a token of a cached key after the limit: %v", err)
	}
}

func TestOIDCIssuerUnreachable(t *testing.T) {
	iss, err := oidctest.Start(jose.RS256)
	if err != nil {
		t.Fatal(err)
	}
	tok, err := iss.Sign(iss.Claims("alice", testAudience, time.Hour, map[string]any{"groups": []string{"krypton-admins"}}))
	if err != nil {
		t.Fatal(err)
	}
	v, err := NewOIDCVerifier(OIDCConfig{Issuer: iss.URL(), Audience: testAudience, RoleClaim: "groups", RoleMap: testRoleMap, Roots: iss.Roots()})
	if err != nil {
		t.Fatal(err)
	}
	defer v.Close()
	iss.Close() // the server starts while the IdP is down
	addr := startTokenServer(t, v, nil)
	_, err = kv1.NewAdminServiceClient(dialToken(t, addr, tok, tls.Certificate{})).Status(t.Context(), &kv1.StatusRequest{})
	wantCode(t, "Status while the issuer is down", err, codes.Unavailable)
	// Certificates do not depend on the IdP.
	if _, err := kv1.NewAdminServiceClient(dial(t, addr, testPKI(t).operator)).Status(t.Context(), &kv1.StatusRequest{}); err != nil {
		t.Fatalf("operator certificate while the issuer is down: %v", err)
	}
}

func TestOIDCNestedRoleClaim(t *testing.T) {
	env := startOIDC(t, jose.RS256, func(c *OIDCConfig) { c.RoleClaim = "realm_access.roles" })
	tok, err := env.iss.Sign(env.iss.Claims("kc-user", testAudience, time.Hour, map[string]any{
		"realm_access": map[string]any{"roles": []string{"offline_access", "krypton-admins"}},
	}))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := kv1.NewAdminServiceClient(dialToken(t, env.addr, tok, tls.Certificate{})).CreateTenant(t.Context(), &kv1.CreateTenantRequest{}); err != nil {
		t.Fatalf("Keycloak-style nested roles: %v", err)
	}
}

func TestServerWithoutOIDCRefusesTokens(t *testing.T) {
	_, addr := startServer(t, nil)
	f := testPKI(t)
	// With an operator certificate and a token, the token is not ignored:
	// the caller is told the server does not take tokens.
	_, err := kv1.NewAdminServiceClient(dialToken(t, addr, "abc.def.ghi", f.operator)).Status(t.Context(), &kv1.StatusRequest{})
	wantCode(t, "token to a server without OIDC", err, codes.Unauthenticated)
	// Without a certificate the handshake fails, as before.
	_, err = kv1.NewAdminServiceClient(dialToken(t, addr, "abc.def.ghi", tls.Certificate{})).Status(t.Context(), &kv1.StatusRequest{})
	wantCode(t, "token-only client to a server without OIDC", err, codes.Unavailable)
}

// TestTokenMethodsClassifyEveryOperatorRPC fails when an RPC is added to
// AdminService or GovernanceService without being classified in
// TokenMethods or certificateOnly.
func TestTokenMethodsClassifyEveryOperatorRPC(t *testing.T) {
	services := []protoreflect.ServiceDescriptor{
		kv1.File_krypton_v1_admin_proto.Services().ByName("AdminService"),
		kv1.File_krypton_v1_governance_proto.Services().ByName("GovernanceService"),
	}
	seen := map[string]bool{}
	for _, sd := range services {
		if sd == nil {
			t.Fatal("service descriptor not found")
		}
		for i := 0; i < sd.Methods().Len(); i++ {
			m := "/" + string(sd.FullName()) + "/" + string(sd.Methods().Get(i).Name())
			seen[m] = true
			_, tokenOK := TokenMethods[m]
			if tokenOK == certificateOnly[m] {
				t.Errorf("%s: classify it in transport/oidc_methods.go: in TokenMethods (viewer if read-only, else admin) or in certificateOnly", m)
			}
		}
	}
	for m := range TokenMethods {
		if !seen[m] {
			t.Errorf("TokenMethods lists %s, which no operator service has", m)
		}
	}
	for m := range certificateOnly {
		if !seen[m] {
			t.Errorf("certificateOnly lists %s, which no operator service has", m)
		}
	}
	// The read-only set, spelt out, so that widening it is a deliberate change.
	var viewer []string
	for m, r := range TokenMethods {
		if r == RoleViewer {
			viewer = append(viewer, strings.TrimPrefix(m, "/krypton.v1."))
		}
	}
	want := []string{
		"AdminService/DescribeKey", "AdminService/DescribeTenant", "AdminService/ListKeys",
		"AdminService/ListPeers", "AdminService/ListTenants", "AdminService/Members", "AdminService/Status",
		"GovernanceService/GetPolicy", "GovernanceService/GetTenant", "GovernanceService/ListServices",
		"GovernanceService/ListTenants", "GovernanceService/Status",
	}
	slices.Sort(viewer)
	if strings.Join(viewer, " ") != strings.Join(want, " ") {
		t.Fatalf("viewer methods:\n got %v\nwant %v", viewer, want)
	}
}

func TestOIDCConfigValidate(t *testing.T) {
	good := OIDCConfig{Issuer: "https://idp.example.com", Audience: "a", RoleClaim: "groups", RoleMap: map[string]Role{"g": RoleAdmin}}
	if err := good.Validate(); err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(*OIDCConfig){
		"Issuer":      func(c *OIDCConfig) { c.Issuer = "" },
		"https":       func(c *OIDCConfig) { c.Issuer = "http://idp.example.com" },
		"Audience":    func(c *OIDCConfig) { c.Audience = "" },
		"RoleClaim":   func(c *OIDCConfig) { c.RoleClaim = "" },
		"RoleMap":     func(c *OIDCConfig) { c.RoleMap = nil },
		"role":        func(c *OIDCConfig) { c.RoleMap = map[string]Role{"g": "root"} },
		"SigningAlgs": func(c *OIDCConfig) { c.SigningAlgs = []string{"HS256"} },
	} {
		c := good
		mod(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), name) && name != "https" && name != "role" {
			t.Errorf("%s: Validate() = %v", name, err)
		}
	}
}
