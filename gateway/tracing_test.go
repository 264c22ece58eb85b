package gateway_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"net"
	"strconv"
	"sync"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/grpc/metadata"
	"google.golang.org/protobuf/proto"

	"github.com/kryptonkms/krypton/gateway"
	"github.com/kryptonkms/krypton/internal/tracing"
	"github.com/kryptonkms/krypton/region"
	"github.com/kryptonkms/krypton/region/regiontest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// otlpReceiver is an OTLP/gRPC trace receiver (what an OpenTelemetry Collector serves) on
// loopback: it keeps every export request it is sent.
type otlpReceiver struct {
	collectorpb.UnimplementedTraceServiceServer
	mu   sync.Mutex
	reqs []*collectorpb.ExportTraceServiceRequest
}

func (r *otlpReceiver) Export(_ context.Context, req *collectorpb.ExportTraceServiceRequest) (*collectorpb.ExportTraceServiceResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reqs = append(r.reqs, proto.Clone(req).(*collectorpb.ExportTraceServiceRequest))
	return &collectorpb.ExportTraceServiceResponse{}, nil
}

// startReceiver serves an otlpReceiver on a loopback port and returns it and its address.
func startReceiver(t *testing.T) (*otlpReceiver, string) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rcv := &otlpReceiver{}
	srv := grpc.NewServer()
	collectorpb.RegisterTraceServiceServer(srv, rcv)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return rcv, ln.Addr().String()
}

// exportedSpan is a span as the receiver got it, with its resource's service.name.
type exportedSpan struct {
	service string
	span    *tracepb.Span
}

// spans returns every span received so far, and every request's bytes, concatenated.
func (r *otlpReceiver) spans(t *testing.T) ([]exportedSpan, []byte) {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []exportedSpan
	var raw []byte
	for _, req := range r.reqs {
		b, err := proto.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		raw = append(raw, b...)
		for _, rs := range req.GetResourceSpans() {
			var svc string
			for _, a := range rs.GetResource().GetAttributes() {
				if a.GetKey() == "service.name" {
					svc = a.GetValue().GetStringValue()
				}
			}
			for _, ss := range rs.GetScopeSpans() {
				for _, s := range ss.GetSpans() {
					out = append(out, exportedSpan{svc, s})
				}
			}
		}
	}
	return out, raw
}

// startTracing starts tracing to the receiver at addr, every call recorded, and shuts it down
// with the test.
func startTracing(t *testing.T, addr, service, node string) *tracing.Tracing {
	t.Helper()
	tr, err := tracing.Start(context.Background(), tracing.Config{Endpoint: addr, Insecure: true,
		SampleRatio: 1, RemoteParentRate: 1000, ServiceName: service, NodeID: node})
	if err != nil || tr == nil {
		t.Fatalf("tracing.Start: %v, %v", tr, err)
	}
	t.Cleanup(func() { tr.Shutdown(context.Background()) })
	return tr
}

// TestTraceGatewayToRegion sends one GenerateDataKey through a traced gateway to a traced region
// node, with both exporting to a real OTLP receiver, and checks that one trace holds the
// gateway's call, batch and region call and the node's RPC, key check and crypto, each the child
// of the one before; that the application's own trace context (a sampled traceparent it sent) is
// only a link, not the parent; and that neither the data key nor any attribute outside the
// allowlist left in a span.
func TestTraceGatewayToRegion(t *testing.T) {
	rcv, addr := startReceiver(t)
	var mu sync.Mutex
	var nodes []*tracing.Tracing
	r := regiontest.Start(t, 1, regiontest.WithConfig(func(c *region.Config) {
		tr := startTracing(t, addr, "krypton-region", c.NodeID)
		mu.Lock()
		nodes = append(nodes, tr)
		mu.Unlock()
		c.TracerProvider = tr.Provider()
	}))
	setupTenant(t, r, "acme", "payments")
	gwTrace := startTracing(t, addr, "krypton-gateway", "")
	g := startGateway(t, r, "acme", "payments", func(c *gateway.Config) {
		c.TracerProvider = gwTrace.Provider()
		c.BatchSize = 1
	})
	c := tcpClient(t, r, g, "acme", "payments")

	// The application sends a sampled trace context of its own.
	const appTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
	ctx := metadata.AppendToOutgoingContext(ctxT(t), "traceparent", "00-"+appTrace+"-00f067aa0ba902b7-01")
	resp, err := c.GenerateDataKey(ctx, &kv1.GenerateDataKeyRequest{})
	if err != nil {
		t.Fatal(err)
	}
	key := resp.GetPlaintext()
	if len(key) != 32 {
		t.Fatalf("plaintext of %d bytes", len(key))
	}

	// The spans end as their calls return, a moment after the answer: flush until the trace is
	// complete.
	want := []struct{ service, name string }{
		{"krypton-gateway", "krypton.v1.GatewayService/GenerateDataKey"},
		{"krypton-gateway", "gateway.generate-data-key"},
		{"krypton-gateway", "gateway.batch"},
		{"krypton-gateway", "krypton.v1.WrapService/Wrap"},
		{"krypton-region", "krypton.v1.WrapService/Wrap"},
		{"krypton-region", "region.key"},
	}
	var chain []*tracepb.Span
	var crypto *tracepb.Span
	var all []exportedSpan
	var raw []byte
	deadline := time.Now().Add(30 * time.Second)
	for {
		fctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		gwTrace.ForceFlush(fctx)
		mu.Lock()
		for _, n := range nodes {
			n.ForceFlush(fctx)
		}
		mu.Unlock()
		cancel()
		all, raw = rcv.spans(t)
		chain, crypto = traceOf(all, want)
		if chain != nil && crypto != nil || time.Now().After(deadline) {
			break
		}
	}
	if chain == nil || crypto == nil {
		for _, s := range all {
			t.Logf("span %s %q trace %x parent %x", s.service, s.span.GetName(), s.span.GetTraceId(), s.span.GetParentSpanId())
		}
		t.Fatalf("no trace with the spans %v (parent before child) and region.crypto was exported", want)
	}

	root := chain[0]
	if len(root.GetParentSpanId()) != 0 {
		t.Errorf("the gateway's server span has parent %x: the application's trace context was followed", root.GetParentSpanId())
	}
	if hex.EncodeToString(root.GetTraceId()) == appTrace {
		t.Error("the gateway's trace is the application's")
	}
	if ls := root.GetLinks(); len(ls) != 1 || hex.EncodeToString(ls[0].GetTraceId()) != appTrace {
		t.Errorf("the gateway's server span links %v, want the application's trace %s", ls, appTrace)
	}
	for i, s := range chain[1:] {
		if !bytes.Equal(s.GetParentSpanId(), chain[i].GetSpanId()) {
			t.Errorf("%s: parent %x, want %s's span %x", want[i+1], s.GetParentSpanId(), want[i].name, chain[i].GetSpanId())
		}
	}
	if got := attrs(chain[5]); got["krypton.tenant"] != "acme" || got["krypton.service"] != "payments" {
		t.Errorf("region.key's attributes %v, want tenant acme and service payments", got)
	}
	if got := attrs(chain[2]); got["krypton.batch.size"] != "1" || got["krypton.op"] != "wrap" {
		t.Errorf("gateway.batch's attributes %v, want op wrap and batch size 1", got)
	}

	// Nothing secret in any span of any trace: the data key's bytes (plain or hex) appear nowhere
	// in what was exported, and every attribute is one of the allowed ones.
	if bytes.Contains(raw, key) || bytes.Contains(raw, []byte(hex.EncodeToString(key))) {
		t.Error("the data key's bytes were exported in a span")
	}
	if bytes.Contains(raw, []byte(r.Anchor)) {
		t.Error("the tenant's anchor URI was exported in a span (CreateTenant was traced too)")
	}
	allowed := map[string]bool{"krypton.tenant": true, "krypton.service": true, "krypton.key.version": true,
		"krypton.op": true, "krypton.batch.size": true, "krypton.node.id": true,
		"rpc.system": true, "rpc.system.name": true, "rpc.service": true, "rpc.method": true,
		"rpc.grpc.status_code": true, "rpc.response.status_code": true}
	for _, s := range all {
		for _, a := range s.span.GetAttributes() {
			if !allowed[a.GetKey()] {
				t.Errorf("span %s %q carries attribute %s", s.service, s.span.GetName(), a.GetKey())
			}
		}
		if len(s.span.GetEvents()) > 0 || s.span.GetStatus().GetMessage() != "" {
			t.Errorf("span %s %q carries events or a status message", s.service, s.span.GetName())
		}
	}
}

// traceOf finds, among spans, a chain matching want (each the parent of the next) and the
// region.crypto span under the chain's region server span.
func traceOf(spans []exportedSpan, want []struct{ service, name string }) ([]*tracepb.Span, *tracepb.Span) {
	find := func(service, name string, parent []byte) *tracepb.Span {
		for _, s := range spans {
			if s.service == service && s.span.GetName() == name && (parent == nil || bytes.Equal(s.span.GetParentSpanId(), parent)) {
				return s.span
			}
		}
		return nil
	}
	root := find(want[0].service, want[0].name, nil)
	if root == nil {
		return nil, nil
	}
	chain := []*tracepb.Span{root}
	for _, w := range want[1:] {
		s := find(w.service, w.name, chain[len(chain)-1].GetSpanId())
		if s == nil || !bytes.Equal(s.GetTraceId(), root.GetTraceId()) {
			return nil, nil
		}
		chain = append(chain, s)
	}
	return chain, find("krypton-region", "region.crypto", chain[4].GetSpanId())
}

// attrs returns a span's attributes as strings.
func attrs(s *tracepb.Span) map[string]string {
	m := map[string]string{}
	for _, a := range s.GetAttributes() {
		v := a.GetValue()
		switch {
		case v.GetStringValue() != "":
			m[a.GetKey()] = v.GetStringValue()
		default:
			m[a.GetKey()] = strconv.FormatInt(v.GetIntValue(), 10)
		}
	}
	return m
}
