package e2e

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// replayProxy is a GovernanceService that stands between a region and the real governance
// cluster and misbehaves as a network and a buggy server may: it delivers every batch of events
// twice, replays the events of earlier batches, and cuts each stream after a few messages. The
// region must apply every event exactly once anyway.
type replayProxy struct {
	kv1.UnimplementedGovernanceServiceServer
	upstream []string
	ca       *pki.CA
	region   string
	srv      *grpc.Server
	ln       net.Listener
	cutAfter int // messages per stream before the proxy cuts it

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn // by upstream address and calling node
	next  int

	sent, replayed, cuts atomic.Int64
}

func startReplayProxy(t *testing.T, ca *pki.CA, region string, upstream []string) *replayProxy {
	t.Helper()
	// The proxy stands in for governance: the region's feed accepts only a governance node.
	srvCert, err := ca.IssueGovernance("replay-proxy", pki.NodeOptions{})
	if err != nil {
		t.Fatal(err)
	}
	p := &replayProxy{
		upstream: upstream,
		ca:       ca,
		region:   region,
		conns:    map[string]*grpc.ClientConn{},
		cutAfter: 12,
	}
	p.ln, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p.srv = grpc.NewServer(grpc.Creds(credentials.NewTLS(pki.ServerTLSConfig(ca.Pool(), srvCert.TLSCertificate()))))
	kv1.RegisterGovernanceServiceServer(p.srv, p)
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.srv.Serve(p.ln)
	}()
	t.Cleanup(func() {
		p.srv.Stop()
		<-done
		p.mu.Lock()
		for _, c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
	})
	return p
}

func (p *replayProxy) Addr() string { return p.ln.Addr().String() }

// upstreamClient returns a client of the next governance node, round robin, so that a dead node
// is passed over on the region's next reconnect. It calls as the region node that called the
// proxy (a certificate with the caller's node ID): governance admits only the region's voters.
func (p *replayProxy) upstreamClient(ctx context.Context) (kv1.GovernanceServiceClient, error) {
	node, err := callerNode(ctx)
	if err != nil {
		return nil, err
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	addr := p.upstream[p.next%len(p.upstream)]
	p.next++
	c := p.conns[addr+"/"+node]
	if c == nil {
		cert, err := p.ca.IssueNode(node, pki.NodeOptions{Region: p.region})
		if err != nil {
			return nil, err
		}
		cfg := transport.ClientConfig{Roots: p.ca.Pool(), Certificate: cert.TLSCertificate(), Server: pki.Identity{Kind: pki.KindGovernance}}
		if c, err = transport.Dial(context.Background(), addr, cfg); err != nil {
			return nil, err
		}
		p.conns[addr+"/"+node] = c
	}
	return kv1.NewGovernanceServiceClient(c), nil
}

// callerNode returns the node ID of the region node calling the proxy.
func callerNode(ctx context.Context) (string, error) {
	pr, ok := peer.FromContext(ctx)
	if !ok {
		return "", errors.New("replay proxy: no peer")
	}
	info, ok := pr.AuthInfo.(credentials.TLSInfo)
	if !ok || len(info.State.PeerCertificates) == 0 {
		return "", errors.New("replay proxy: no client certificate")
	}
	id, err := pki.IdentityFromCertificate(info.State.PeerCertificates[0])
	if err != nil {
		return "", err
	}
	return id.NodeID, nil
}

func (p *replayProxy) WatchRevocations(req *kv1.WatchRevocationsRequest, stream kv1.GovernanceService_WatchRevocationsServer) error {
	c, err := p.upstreamClient(stream.Context())
	if err != nil {
		return status.Error(codes.Unavailable, err.Error())
	}
	ctx, cancel := context.WithCancel(stream.Context())
	defer cancel()
	up, err := c.WatchRevocations(ctx, req)
	if err != nil {
		return err
	}
	var history []*kv1.RevocationEvent
	for n := 1; ; n++ {
		msg, err := up.Recv()
		if err != nil {
			return err
		}
		if n > p.cutAfter {
			p.cuts.Add(1)
			return status.Error(codes.Unavailable, "replay proxy: stream cut")
		}
		if err := stream.Send(msg); err != nil {
			return err
		}
		p.sent.Add(int64(len(msg.GetEvents())))
		if len(msg.GetEvents()) == 0 {
			continue
		}
		// The same batch again, then everything this stream delivered so far, with the head of
		// the latest message.
		history = append(history, msg.GetEvents()...)
		for _, again := range [][]*kv1.RevocationEvent{msg.GetEvents(), history} {
			if err := stream.Send(&kv1.WatchRevocationsResponse{Events: again, HeadCursor: msg.GetHeadCursor()}); err != nil {
				return err
			}
			p.replayed.Add(int64(len(again)))
		}
	}
}

func (p *replayProxy) ReportCursor(ctx context.Context, req *kv1.ReportCursorRequest) (*kv1.ReportCursorResponse, error) {
	c, err := p.upstreamClient(ctx)
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return c.ReportCursor(ctx, req)
}
