package jepsen

import (
	"context"
	"net"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/keepalive"

	"github.com/kryptonkms/krypton/internal/pki"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// conns holds one gRPC connection per (identity, node): the operator's for the AdminService,
// and one per service for its WrapService calls (a caller's certificate names its tenant and
// service). transport.Dial is not used because the clients must dial from inside the control
// namespace (network.dial); the TLS configuration is the same pki.ClientTLSConfig.
type conns struct {
	c   *cluster
	mu  sync.Mutex
	m   map[string]*grpc.ClientConn // identity + "@" + node
	ids map[string]*pki.Certificate
}

func newConns(c *cluster) *conns {
	return &conns{c: c, m: map[string]*grpc.ClientConn{}, ids: map[string]*pki.Certificate{}}
}

func (cs *conns) cert(ident string, issue func() (*pki.Certificate, error)) (*pki.Certificate, error) {
	if c, ok := cs.ids[ident]; ok {
		return c, nil
	}
	c, err := issue()
	if err != nil {
		return nil, err
	}
	cs.ids[ident] = c
	return c, nil
}

func (cs *conns) conn(ident string, i int, issue func() (*pki.Certificate, error)) (*grpc.ClientConn, error) {
	id := cs.c.nodes[i].id
	return cs.connTo(ident, pki.Identity{Kind: pki.KindNode, Region: cs.c.region, NodeID: id}, cs.c.host(i), cs.c.apiAddr(i), issue)
}

// connTo returns the connection of ident to server (the node of the region, or of governance,
// that the server's certificate must name, as transport.Dial's ClientConfig.Server has it) at
// network host index i, addr.
func (cs *conns) connTo(ident string, server pki.Identity, i int, addr string, issue func() (*pki.Certificate, error)) (*grpc.ClientConn, error) {
	id := server.NodeID
	cs.mu.Lock()
	defer cs.mu.Unlock()
	key := ident + "@" + id
	if cc, ok := cs.m[key]; ok {
		return cc, nil
	}
	cert, err := cs.cert(ident, issue)
	if err != nil {
		return nil, err
	}
	tlsCfg := pki.ClientTLSConfig(cs.c.ca.Pool(), cert.TLSCertificate(), cs.c.net.host(i))
	tlsCfg.VerifyConnection = pki.RequirePeer(server)
	cc, err := grpc.NewClient("passthrough:///"+addr,
		grpc.WithTransportCredentials(credentials.NewTLS(tlsCfg)),
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) { return cs.c.net.dial(ctx, addr) }),
		grpc.WithKeepaliveParams(keepalive.ClientParameters{Time: 10 * time.Second, Timeout: 2 * time.Second, PermitWithoutStream: false}),
		// Reconnect quickly after a node comes back: the default backoff grows to two minutes.
		grpc.WithConnectParams(grpc.ConnectParams{MinConnectTimeout: 2 * time.Second, Backoff: fastBackoff}),
	)
	if err != nil {
		return nil, err
	}
	cs.m[key] = cc
	return cc, nil
}

func (cs *conns) admin(i int) (kv1.AdminServiceClient, error) {
	cc, err := cs.conn("operator", i, func() (*pki.Certificate, error) { return cs.c.ca.IssueOperator("jepsen", 0) })
	if err != nil {
		return nil, err
	}
	return kv1.NewAdminServiceClient(cc), nil
}

// gov is governance node j's GovernanceService, as the operator.
func (cs *conns) gov(j int) (kv1.GovernanceServiceClient, error) {
	nd := cs.c.gov[j]
	cc, err := cs.connTo("operator", pki.Identity{Kind: pki.KindGovernance, NodeID: nd.id}, nd.i, cs.c.govAddr(j), func() (*pki.Certificate, error) { return cs.c.ca.IssueOperator("jepsen", 0) })
	if err != nil {
		return nil, err
	}
	return kv1.NewGovernanceServiceClient(cc), nil
}

func (cs *conns) wrap(i int, tenant, service string) (kv1.WrapServiceClient, error) {
	cc, err := cs.conn("svc/"+tenant+"/"+service, i, func() (*pki.Certificate, error) { return cs.c.ca.IssueService(tenant, service, 0) })
	if err != nil {
		return nil, err
	}
	return kv1.NewWrapServiceClient(cc), nil
}

func (cs *conns) close() {
	cs.mu.Lock()
	defer cs.mu.Unlock()
	for _, cc := range cs.m {
		cc.Close()
	}
	cs.m = map[string]*grpc.ClientConn{}
}
