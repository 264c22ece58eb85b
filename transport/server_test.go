package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/fsm"
	"github.com/kryptonkms/krypton/internal/pki"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

func okWrap() *kv1.WrapRequest {
	return &kv1.WrapRequest{Key: &kv1.KeyRef{Tenant: "acme", Service: "payments"}, Plaintext: make([]byte, 32)}
}

// A client that presents no certificate, or one from another CA, fails the
// TLS handshake. gRPC reports that to the caller as codes.Unavailable (the
// connection could not be established), not Unauthenticated: the server
// never sees a call. With WaitReady, Dial itself fails.
func TestHandshakeRefused(t *testing.T) {
	f := testPKI(t)
	_, addr := startServer(t, nil)

	noCert, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{
		MinVersion: tls.VersionTLS13,
		RootCAs:    f.ca.Pool(),
	})))
	if err != nil {
		t.Fatal(err)
	}
	defer noCert.Close()
	foreign := dial(t, addr, f.foreign)

	for name, conn := range map[string]*grpc.ClientConn{"no certificate": noCert, "another CA": foreign} {
		_, err := kv1.NewWrapServiceClient(conn).Wrap(t.Context(), okWrap())
		if code := status.Code(err); code != codes.Unavailable {
			t.Errorf("%s: code %v (%v), want Unavailable", name, code, err)
		}
	}

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	conn, err := Dial(ctx, addr, ClientConfig{Roots: f.ca.Pool(), Certificate: f.foreign, Server: srvIdentity, WaitReady: true})
	if err == nil {
		conn.Close()
		t.Fatal("Dial with WaitReady and a foreign certificate succeeded")
	}
	if !strings.HasPrefix(err.Error(), "transport: ") {
		t.Errorf("error %q lacks the package prefix", err)
	}

	conn, err = Dial(ctx, addr, ClientConfig{Roots: f.ca.Pool(), Certificate: f.service, Server: srvIdentity, WaitReady: true})
	if err != nil {
		t.Fatalf("Dial with WaitReady and a good certificate: %v", err)
	}
	conn.Close()
}

// TestClientChecksServer: a client refuses a server that is not the one it means to call, though
// its chain and name are good: a gateway's certificate posing as a region node, a node of another
// region, another node than the one named, governance for a region.
func TestClientChecksServer(t *testing.T) {
	f := testPKI(t)
	_, gwAddr := startServer(t, func(c *ServerConfig) { c.Certificate = f.gateway })
	_, addr := startServer(t, nil)
	for name, tc := range map[string]struct {
		addr string
		want pki.Identity
		ok   bool
	}{
		"a gateway posing as a region node":  {gwAddr, pki.Identity{Kind: pki.KindNode}, false},
		"the region node":                    {addr, pki.Identity{Kind: pki.KindNode}, true},
		"the region node of its region":      {addr, pki.Identity{Kind: pki.KindNode, Region: "eu", NodeID: "srv"}, true},
		"a node of another region":           {addr, pki.Identity{Kind: pki.KindNode, Region: "us"}, false},
		"another node":                       {addr, pki.Identity{Kind: pki.KindNode, Region: "eu", NodeID: "node-1"}, false},
		"a region node posing as governance": {addr, pki.Identity{Kind: pki.KindGovernance}, false},
		"a region node posing as a gateway":  {addr, pki.Identity{Kind: pki.KindGateway, Tenant: "acme"}, false},
		"the gateway of its tenant":          {gwAddr, pki.Identity{Kind: pki.KindGateway, Tenant: "acme"}, true},
	} {
		t.Run(name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			conn, err := Dial(ctx, tc.addr, ClientConfig{Roots: f.ca.Pool(), Certificate: f.service, Server: tc.want, WaitReady: true})
			if err == nil {
				conn.Close()
			}
			if (err == nil) != tc.ok {
				t.Fatalf("Dial: %v, want success %v", err, tc.ok)
			}
		})
	}
	if _, err := Dial(t.Context(), addr, ClientConfig{Roots: f.ca.Pool(), Certificate: f.service}); err == nil ||
		!strings.Contains(err.Error(), "ClientConfig.Server") {
		t.Errorf("Dial without Server: %v, want an error naming ClientConfig.Server", err)
	}
}

func TestAuthorization(t *testing.T) {
	f := testPKI(t)
	_, addr := startServer(t, nil)
	conns := map[string]*grpc.ClientConn{
		"service":  dial(t, addr, f.service),
		"operator": dial(t, addr, f.operator),
		"node":     dial(t, addr, f.node),
		"us node":  dial(t, addr, f.usNode),
		"gov node": dial(t, addr, f.govNode),
		"anon":     dial(t, addr, f.anon),
	}
	wrapCall := func(c *grpc.ClientConn) error {
		_, err := kv1.NewWrapServiceClient(c).Wrap(t.Context(), okWrap())
		return err
	}
	statusCall := func(c *grpc.ClientConn) error {
		_, err := kv1.NewAdminServiceClient(c).Status(t.Context(), &kv1.StatusRequest{})
		return err
	}
	renewCall := func(nodeID string) func(*grpc.ClientConn) error {
		return func(c *grpc.ClientConn) error {
			_, err := kv1.NewNodeServiceClient(c).RenewLease(t.Context(), &kv1.RenewLeaseRequest{NodeId: nodeID})
			return err
		}
	}
	snapshotCall := func(c *grpc.ClientConn) error {
		s, err := kv1.NewAdminServiceClient(c).SnapshotSave(t.Context(), &kv1.SnapshotSaveRequest{})
		if err != nil {
			return err
		}
		for {
			if _, err := s.Recv(); err == io.EOF {
				return nil
			} else if err != nil {
				return err
			}
		}
	}
	otherTenant := func(c *grpc.ClientConn) error {
		req := okWrap()
		req.Key.Tenant = "globex"
		_, err := kv1.NewWrapServiceClient(c).Wrap(t.Context(), req)
		return err
	}
	for _, c := range []struct {
		who  string
		name string
		call func(*grpc.ClientConn) error
		want codes.Code
	}{
		{"service", "Wrap", wrapCall, codes.OK},
		{"service", "Wrap another tenant's key", otherTenant, codes.PermissionDenied},
		{"service", "AdminService.Status", statusCall, codes.PermissionDenied},
		{"service", "AdminService.SnapshotSave", snapshotCall, codes.PermissionDenied},
		{"service", "NodeService.RenewLease", renewCall("node-2"), codes.PermissionDenied},
		{"operator", "AdminService.Status", statusCall, codes.OK},
		{"operator", "AdminService.SnapshotSave", snapshotCall, codes.OK},
		{"operator", "NodeService.RenewLease", renewCall("node-2"), codes.PermissionDenied},
		{"operator", "Wrap", wrapCall, codes.PermissionDenied},
		{"node", "NodeService.RenewLease", renewCall("node-2"), codes.OK},
		{"node", "NodeService.RenewLease for another node", renewCall("srv"), codes.PermissionDenied},
		{"node", "AdminService.Status", statusCall, codes.PermissionDenied},
		{"node", "Wrap", wrapCall, codes.PermissionDenied},
		// node-2 of another region, and governance's node-2, are not this region's node-2.
		{"us node", "NodeService.RenewLease", renewCall("node-2"), codes.PermissionDenied},
		{"gov node", "NodeService.RenewLease", renewCall("node-2"), codes.PermissionDenied},
		{"gov node", "AdminService.Status", statusCall, codes.PermissionDenied},
		{"anon", "Wrap", wrapCall, codes.Unauthenticated},
		{"anon", "AdminService.SnapshotSave", snapshotCall, codes.Unauthenticated},
	} {
		if got := status.Code(c.call(conns[c.who])); got != c.want {
			t.Errorf("%s calling %s: %v, want %v", c.who, c.name, got, c.want)
		}
	}

	// Handlers see the caller's identity, in unary and streaming calls.
	st, err := kv1.NewAdminServiceClient(conns["operator"]).Status(t.Context(), &kv1.StatusRequest{})
	if err != nil || st.NodeId != "spiffe://krypton/operator/alice" {
		t.Errorf("Status = %v, %v; want the operator's identity", st, err)
	}
	s, err := kv1.NewAdminServiceClient(conns["operator"]).SnapshotSave(t.Context(), &kv1.SnapshotSaveRequest{})
	if err != nil {
		t.Fatal(err)
	}
	chunk, err := s.Recv()
	if err != nil || chunk.GetMeta().GetRegion() != "spiffe://krypton/operator/alice" {
		t.Errorf("SnapshotSave chunk = %v, %v; want the operator's identity", chunk, err)
	}

	// Health is open to every verified identity, and to none other.
	for who, conn := range conns {
		_, err := healthpb.NewHealthClient(conn).Check(t.Context(), &healthpb.HealthCheckRequest{})
		want := codes.OK
		if who == "anon" {
			want = codes.Unauthenticated
		}
		if status.Code(err) != want {
			t.Errorf("%s health check: %v, want %v", who, err, want)
		}
	}
}

func TestPolicyUnlistedService(t *testing.T) {
	f := testPKI(t)
	_, addr := startServer(t, func(c *ServerConfig) {
		c.Policy = Policy{HealthService: {}} // WrapService registered but unlisted
	})
	_, err := kv1.NewWrapServiceClient(dial(t, addr, f.service)).Wrap(t.Context(), okWrap())
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("unlisted service: %v, want PermissionDenied", err)
	}
}

func TestHandlerErrorsTranslated(t *testing.T) {
	f := testPKI(t)
	logs := &syncBuffer{}
	_, addr := startServer(t, func(c *ServerConfig) { c.Logger = testLogger(t, logs) })
	client := kv1.NewWrapServiceClient(dial(t, addr, f.service))

	for i, c := range errorCases {
		id := fmt.Sprintf("case-%d", i)
		handlerErrors.Store(id, fmt.Errorf("region: %s: %w", secret, c.err))
		defer handlerErrors.Delete(id)
		req := okWrap()
		req.RequestId = id
		_, err := client.Wrap(t.Context(), req)
		st := status.Convert(err)
		if st.Code() != c.code {
			t.Errorf("handler returning %q: %v, want %v", c.err, st.Code(), c.code)
		}
		if strings.Contains(st.Message(), secret) {
			t.Errorf("handler returning %q: message %q echoes the error's bytes", c.err, st.Message())
		}
	}

	handlerErrors.Store("unmapped", errors.New("bolt: disk on fire"))
	defer handlerErrors.Delete("unmapped")
	req := okWrap()
	req.RequestId = "unmapped"
	_, err := client.Wrap(t.Context(), req)
	if st := status.Convert(err); st.Code() != codes.Internal || st.Message() != "transport: internal error" {
		t.Errorf("unmapped error: %v", err)
	}
	if !strings.Contains(logs.String(), "disk on fire") {
		t.Error("the unmapped error's detail did not reach the log")
	}
}

func TestPanicRecovered(t *testing.T) {
	f := testPKI(t)
	logs := &syncBuffer{}
	_, addr := startServer(t, func(c *ServerConfig) { c.Logger = testLogger(t, logs) })
	client := kv1.NewWrapServiceClient(dial(t, addr, f.service))

	req := okWrap()
	req.RequestId = "panic"
	req.Context = []byte(secret)
	_, err := client.Wrap(t.Context(), req)
	if st := status.Convert(err); st.Code() != codes.Internal || st.Message() != "transport: internal error" {
		t.Fatalf("panicking handler: %v, want Internal", err)
	}
	l := logs.String()
	if !strings.Contains(l, "panic in call") || !strings.Contains(l, "wrapServer.Wrap") || !strings.Contains(l, "nil map") {
		t.Errorf("panic log lacks the message, runtime error or stack:\n%s", l)
	}
	if strings.Contains(l, secret) {
		t.Error("panic log holds request bytes")
	}
	if _, err := client.Wrap(t.Context(), okWrap()); err != nil {
		t.Errorf("after a panic the server no longer serves: %v", err)
	}
}

type auditRecord struct {
	method string
	id     pki.Identity
	code   codes.Code
}

func TestAuditHook(t *testing.T) {
	f := testPKI(t)
	var mu sync.Mutex
	var got []auditRecord
	_, addr := startServer(t, func(c *ServerConfig) {
		c.Audit = func(_ context.Context, method string, id pki.Identity, code codes.Code) {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, auditRecord{method, id, code})
		}
	})
	service := dial(t, addr, f.service)
	anon := dial(t, addr, f.anon)
	serviceID := pki.Identity{Kind: pki.KindService, Tenant: "acme", Service: "payments"}

	handlerErrors.Store("revoked", &fsm.Error{Err: fsm.ErrRevoked, Tenant: "acme"})
	handlerErrors.Store("no-lease", status.Error(codes.Unavailable, "region: no serving lease"))
	defer handlerErrors.Delete("revoked")
	defer handlerErrors.Delete("no-lease")

	wc := kv1.NewWrapServiceClient(service)
	_, _ = wc.Wrap(t.Context(), okWrap()) // OK: not audited
	revoked := okWrap()
	revoked.RequestId = "revoked"
	_, _ = wc.Wrap(t.Context(), revoked)
	noLease := okWrap()
	noLease.RequestId = "no-lease"
	_, _ = wc.Wrap(t.Context(), noLease) // Unavailable: not a refusal
	_, _ = kv1.NewAdminServiceClient(service).Status(t.Context(), &kv1.StatusRequest{})
	_, _ = kv1.NewWrapServiceClient(anon).Wrap(t.Context(), okWrap())
	s, err := kv1.NewAdminServiceClient(service).SnapshotSave(t.Context(), &kv1.SnapshotSaveRequest{})
	if err == nil {
		_, _ = s.Recv()
	}

	want := []auditRecord{
		{"/krypton.v1.WrapService/Wrap", serviceID, codes.FailedPrecondition},
		{"/krypton.v1.AdminService/Status", serviceID, codes.PermissionDenied},
		{"/krypton.v1.WrapService/Wrap", pki.Identity{}, codes.Unauthenticated},
		{"/krypton.v1.AdminService/SnapshotSave", serviceID, codes.PermissionDenied},
	}
	mu.Lock()
	defer mu.Unlock()
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("audit records\n got %v\nwant %v", got, want)
	}
}

func TestMessageLimits(t *testing.T) {
	f := testPKI(t)
	_, addr := startServer(t, nil)
	client := kv1.NewWrapServiceClient(dial(t, addr, f.service))

	// Over the server's 8 MiB: refused by gRPC before decoding. The client
	// is told to send up to 16 MiB so that the server is what refuses.
	big := okWrap()
	big.Context = make([]byte, 9<<20)
	_, err := client.Wrap(t.Context(), big, grpc.MaxCallSendMsgSize(16<<20))
	if st := status.Convert(err); st.Code() != codes.ResourceExhausted || !strings.Contains(st.Message(), "received message larger than max") {
		t.Errorf("9 MiB request: %v, want ResourceExhausted from the server", err)
	}
	// With the default call options the client refuses to send it.
	_, err = client.Wrap(t.Context(), big)
	if status.Code(err) != codes.ResourceExhausted {
		t.Errorf("9 MiB request with default options: %v, want ResourceExhausted", err)
	}
	// Within the message limit but over the field's: the handler's check.
	big.Context = make([]byte, 4097)
	if _, err := client.Wrap(t.Context(), big); status.Code(err) != codes.InvalidArgument {
		t.Errorf("4097-byte context: %v, want InvalidArgument", err)
	}
	if _, err := client.Wrap(t.Context(), okWrap()); err != nil {
		t.Errorf("server stopped serving after oversized requests: %v", err)
	}
}

func TestMetrics(t *testing.T) {
	f := testPKI(t)
	reg := prometheus.NewRegistry()
	m, err := NewMetrics(reg)
	if err != nil {
		t.Fatal(err)
	}
	_, addr := startServer(t, func(c *ServerConfig) { c.Metrics = m })
	client := kv1.NewWrapServiceClient(dial(t, addr, f.service))
	for range 3 {
		if _, err := client.Wrap(t.Context(), okWrap()); err != nil {
			t.Fatal(err)
		}
	}
	p := okWrap()
	p.RequestId = "panic"
	_, _ = client.Wrap(t.Context(), p)
	_, _ = kv1.NewAdminServiceClient(dial(t, addr, f.service)).Status(t.Context(), &kv1.StatusRequest{})

	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	find := func(name string, labels map[string]string) *dto.Metric {
		for _, mf := range mfs {
			if mf.GetName() != name {
				continue
			}
		next:
			for _, metric := range mf.GetMetric() {
				for _, lp := range metric.GetLabel() {
					if v, ok := labels[lp.GetName()]; ok && v != lp.GetValue() {
						continue next
					}
				}
				return metric
			}
		}
		t.Fatalf("no %s%v", name, labels)
		return nil
	}
	wrapOK := map[string]string{"grpc_service": WrapService, "grpc_method": "Wrap", "grpc_code": "OK"}
	if v := find("krypton_grpc_server_handled_total", wrapOK).GetCounter().GetValue(); v != 3 {
		t.Errorf("Wrap OK = %v, want 3", v)
	}
	wrapInternal := map[string]string{"grpc_service": WrapService, "grpc_method": "Wrap", "grpc_code": "Internal"}
	if v := find("krypton_grpc_server_handled_total", wrapInternal).GetCounter().GetValue(); v != 1 {
		t.Errorf("Wrap Internal (panic) = %v, want 1", v)
	}
	denied := map[string]string{"grpc_service": AdminService, "grpc_method": "Status", "grpc_code": "PermissionDenied"}
	if v := find("krypton_grpc_server_handled_total", denied).GetCounter().GetValue(); v != 1 {
		t.Errorf("Status PermissionDenied = %v, want 1", v)
	}
	wrap := map[string]string{"grpc_service": WrapService, "grpc_method": "Wrap"}
	if n := find("krypton_grpc_server_handling_seconds", wrap).GetHistogram().GetSampleCount(); n != 4 {
		t.Errorf("Wrap latency samples = %d, want 4", n)
	}
	if v := find("krypton_grpc_server_in_flight", wrap).GetGauge().GetValue(); v != 0 {
		t.Errorf("in flight after the calls = %v, want 0", v)
	}
	if _, err := NewMetrics(reg); err == nil {
		t.Error("registering the collectors twice on one registry succeeded")
	}
}

func TestHealthAndShutdown(t *testing.T) {
	f := testPKI(t)
	s, addr := startServer(t, nil)
	health := healthpb.NewHealthClient(dial(t, addr, f.node))
	check := func(service string) healthpb.HealthCheckResponse_ServingStatus {
		t.Helper()
		r, err := health.Check(t.Context(), &healthpb.HealthCheckRequest{Service: service})
		if err != nil {
			t.Fatalf("health check %q: %v", service, err)
		}
		return r.Status
	}
	if got := check(""); got != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("server health = %v, want SERVING", got)
	}
	s.SetServing(WrapService, true)
	if got := check(WrapService); got != healthpb.HealthCheckResponse_SERVING {
		t.Errorf("WrapService health = %v, want SERVING", got)
	}
	s.SetServing(WrapService, false)
	if got := check(WrapService); got != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Errorf("WrapService health after SetServing(false) = %v, want NOT_SERVING", got)
	}

	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Errorf("Shutdown: %v", err)
	}
	if err := s.Shutdown(ctx); !errors.Is(err, ErrShutdown) {
		t.Errorf("second Shutdown = %v, want ErrShutdown", err)
	}
	if _, err := health.Check(t.Context(), &healthpb.HealthCheckRequest{}); status.Code(err) != codes.Unavailable {
		t.Errorf("health check after Shutdown: %v, want Unavailable", err)
	}
}

func TestServerConfigValidate(t *testing.T) {
	f := testPKI(t)
	good := ServerConfig{Roots: f.ca.Pool(), Certificate: f.server}
	if err := good.Validate(); err != nil {
		t.Errorf("valid config: %v", err)
	}
	for field, edit := range map[string]func(*ServerConfig){
		"Roots":          func(c *ServerConfig) { c.Roots = nil },
		"Certificate":    func(c *ServerConfig) { c.Certificate = tls.Certificate{} },
		"MaxRecvMsgSize": func(c *ServerConfig) { c.MaxRecvMsgSize = -1 },
		"Keepalive":      func(c *ServerConfig) { c.KeepaliveTime = -time.Second },
	} {
		c := good
		edit(&c)
		err := c.Validate()
		if err == nil || !strings.Contains(err.Error(), "ServerConfig."+field) || !strings.HasPrefix(err.Error(), "transport: ") {
			t.Errorf("%s: Validate = %v", field, err)
		}
		if _, err := NewServer(c); err == nil {
			t.Errorf("%s: NewServer accepted an invalid config", field)
		}
	}
}
