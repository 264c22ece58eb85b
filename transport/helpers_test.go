package transport

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"log/slog"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/internal/leaktest"
	"github.com/kryptonkms/krypton/internal/logtest"
	"github.com/kryptonkms/krypton/internal/pki"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// fixture is the PKI every test shares: one CA with a server (node)
// certificate and one certificate of each kind, a second CA, and a
// certificate of the first CA that names no Krypton identity.
type fixture struct {
	ca       *pki.CA
	server   tls.Certificate // node "srv" of region eu
	node     tls.Certificate // node "node-2" of region eu
	usNode   tls.Certificate // node "node-2" of region us
	govNode  tls.Certificate // governance node "node-2"
	gateway  tls.Certificate // gateway acme/gw
	service  tls.Certificate // acme/payments
	operator tls.Certificate // alice
	foreign  tls.Certificate // acme/payments, from another CA
	anon     tls.Certificate // from ca, no SPIFFE URI
}

var (
	fixOnce sync.Once
	fix     fixture
	fixErr  error
)

func testPKI(t *testing.T) fixture {
	t.Helper()
	fixOnce.Do(func() { fix, fixErr = newFixture() })
	if fixErr != nil {
		t.Fatal(fixErr)
	}
	return fix
}

func newFixture() (fixture, error) {
	var f fixture
	var err error
	if f.ca, err = pki.NewCA("transport test CA", 0); err != nil {
		return f, err
	}
	other, err := pki.NewCA("another CA", 0)
	if err != nil {
		return f, err
	}
	issue := func(c *pki.Certificate, err error) tls.Certificate {
		if err != nil {
			fixErr = err
			return tls.Certificate{}
		}
		return c.TLSCertificate()
	}
	f.server = issue(f.ca.IssueNode("srv", pki.NodeOptions{Region: "eu"}))
	f.node = issue(f.ca.IssueNode("node-2", pki.NodeOptions{Region: "eu"}))
	f.usNode = issue(f.ca.IssueNode("node-2", pki.NodeOptions{Region: "us"}))
	f.govNode = issue(f.ca.IssueGovernance("node-2", pki.NodeOptions{}))
	f.gateway = issue(f.ca.IssueGateway("acme", "gw", pki.NodeOptions{}))
	f.service = issue(f.ca.IssueService("acme", "payments", 0))
	f.operator = issue(f.ca.IssueOperator("alice", 0))
	f.foreign = issue(other.IssueService("acme", "payments", 0))
	if fixErr != nil {
		return f, fixErr
	}
	f.anon, err = anonymousCert(f.ca)
	return f, err
}

// anonymousCert issues, with ca's key, a client certificate that chains to
// ca but carries no Krypton SPIFFE URI.
func anonymousCert(ca *pki.CA) (tls.Certificate, error) {
	dir, err := os.MkdirTemp("", "transport-ca")
	if err != nil {
		return tls.Certificate{}, err
	}
	defer os.RemoveAll(dir)
	if err := ca.WriteFiles(filepath.Join(dir, "ca.pem"), filepath.Join(dir, "ca-key.pem")); err != nil {
		return tls.Certificate{}, err
	}
	keyPEM, err := os.ReadFile(filepath.Join(dir, "ca-key.pem"))
	if err != nil {
		return tls.Certificate{}, err
	}
	b, _ := pem.Decode(keyPEM)
	if b == nil {
		return tls.Certificate{}, fmt.Errorf("no PEM in CA key file")
	}
	caKey, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return tls.Certificate{}, err
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(4242),
		Subject:      pkix.Name{CommonName: "anonymous"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.Certificate(), &key.PublicKey, caKey.(crypto.Signer))
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}

// testLogger writes to t.Log and, if buf is not nil, to buf too.
func testLogger(t *testing.T, buf *syncBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(logWriter{t: logtest.New(t), buf: buf}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type logWriter struct {
	t   *logtest.Writer
	buf *syncBuffer
}

func (w logWriter) Write(p []byte) (int, error) {
	w.t.Write(p)
	if w.buf != nil {
		w.buf.Write(p)
	}
	return len(p), nil
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// handlerErrors are the errors the test WrapService returns, chosen by the
// request_id of a Wrap call.
var handlerErrors sync.Map // string -> error

// wrapServer is a test WrapService: Wrap returns handlerErrors[request_id],
// panics for request_id "panic", and otherwise checks the request as a real
// handler would and answers with a dummy blob.
type wrapServer struct {
	kv1.UnimplementedWrapServiceServer
}

func (wrapServer) Wrap(ctx context.Context, req *kv1.WrapRequest) (*kv1.WrapResponse, error) {
	if req.RequestId == "panic" {
		var m map[string]int
		m["boom"]++ // a nil-map write: a runtime error
	}
	if err, ok := handlerErrors.Load(req.RequestId); ok {
		return nil, err.(error)
	}
	// The default key-use rule (package policy), as a region applies it to a tenant without rules.
	if id, ok := IdentityFromContext(ctx); !ok || id.Kind != pki.KindService || id.Tenant != req.GetKey().GetTenant() || id.Service != req.GetKey().GetService() {
		return nil, status.Error(codes.PermissionDenied, "transport: caller may not use this key")
	}
	if err := CheckPlaintext(req.Plaintext); err != nil {
		return nil, err
	}
	if err := CheckContext(req.Context); err != nil {
		return nil, err
	}
	return &kv1.WrapResponse{Blob: []byte{1}, Key: req.Key}, nil
}

// adminServer is a test AdminService: Status and SnapshotSave report the
// caller's identity.
type adminServer struct {
	kv1.UnimplementedAdminServiceServer
}

func (adminServer) Status(ctx context.Context, _ *kv1.StatusRequest) (*kv1.StatusResponse, error) {
	id, ok := IdentityFromContext(ctx)
	if !ok {
		return nil, fmt.Errorf("no identity in handler")
	}
	return &kv1.StatusResponse{NodeId: id.String()}, nil
}

func (adminServer) SnapshotSave(_ *kv1.SnapshotSaveRequest, stream grpc.ServerStreamingServer[kv1.SnapshotChunk]) error {
	id, ok := IdentityFromContext(stream.Context())
	if !ok {
		return fmt.Errorf("no identity in handler")
	}
	return stream.Send(&kv1.SnapshotChunk{Meta: &kv1.SnapshotMeta{Region: id.String()}})
}

// nodeServer is a test NodeService: RenewLease checks the node ID.
type nodeServer struct {
	kv1.UnimplementedNodeServiceServer
}

func (nodeServer) RenewLease(ctx context.Context, req *kv1.RenewLeaseRequest) (*kv1.RenewLeaseResponse, error) {
	if err := AuthorizeNode(ctx, req.NodeId); err != nil {
		return nil, err
	}
	return &kv1.RenewLeaseResponse{Term: 7}, nil
}

// startServer starts a Server with the test services on 127.0.0.1 and
// stops it when the test ends. edit may change the configuration first.
func startServer(t *testing.T, edit func(*ServerConfig)) (*Server, string) {
	t.Helper()
	f := testPKI(t)
	cfg := ServerConfig{Roots: f.ca.Pool(), Certificate: f.server, Logger: testLogger(t, nil)}
	if edit != nil {
		edit(&cfg)
	}
	s, err := NewServer(cfg)
	if err != nil {
		t.Fatal(err)
	}
	kv1.RegisterWrapServiceServer(s, wrapServer{})
	kv1.RegisterAdminServiceServer(s, adminServer{})
	kv1.RegisterNodeServiceServer(s, nodeServer{})
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
	return s, ln.Addr().String()
}

// srvIdentity is who the test server is: what clients expect.
var srvIdentity = pki.Identity{Kind: pki.KindNode, Region: "eu", NodeID: "srv"}

// dial connects to addr with cert, trusting the test CA and expecting the test server.
func dial(t *testing.T, addr string, cert tls.Certificate) *grpc.ClientConn {
	t.Helper()
	conn, err := Dial(t.Context(), addr, ClientConfig{Roots: testPKI(t).ca.Pool(), Certificate: cert, Server: srvIdentity})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// TestMain fails the run if goroutines outlive the tests.
func TestMain(m *testing.M) { leaktest.VerifyTestMain(m, 5*time.Second) }
