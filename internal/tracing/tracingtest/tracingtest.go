// Package tracingtest is a real OTLP/gRPC trace receiver for tests: what an OpenTelemetry
// Collector serves, on loopback, keeping every span it is sent.
package tracingtest

import (
	"bytes"
	"context"
	"net"
	"sync"
	"testing"
	"time"

	collectorpb "go.opentelemetry.io/proto/otlp/collector/trace/v1"
	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/kryptonkms/krypton/internal/tracing"
)

// Receiver implements the collector's TraceService.
type Receiver struct {
	collectorpb.UnimplementedTraceServiceServer
	// Addr is the receiver's host:port on loopback (plaintext: tracing.Config.Insecure).
	Addr string

	mu   sync.Mutex
	reqs []*collectorpb.ExportTraceServiceRequest
}

// Export keeps req.
func (r *Receiver) Export(_ context.Context, req *collectorpb.ExportTraceServiceRequest) (*collectorpb.ExportTraceServiceResponse, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reqs = append(r.reqs, proto.Clone(req).(*collectorpb.ExportTraceServiceRequest))
	return &collectorpb.ExportTraceServiceResponse{}, nil
}

// Start serves a Receiver until the test ends.
func Start(t testing.TB) *Receiver {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	r := &Receiver{Addr: ln.Addr().String()}
	srv := grpc.NewServer()
	collectorpb.RegisterTraceServiceServer(srv, r)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return r
}

// Tracing starts tracing to r, every call recorded, as service (node: krypton.node.id), and
// shuts it down when the test ends.
func (r *Receiver) Tracing(t testing.TB, service, node string) *tracing.Tracing {
	t.Helper()
	tr, err := tracing.Start(context.Background(), tracing.Config{Endpoint: r.Addr, Insecure: true,
		SampleRatio: 1, RemoteParentRate: 1000, ServiceName: service, NodeID: node})
	if err != nil || tr == nil {
		t.Fatalf("tracing.Start: %v, %v", tr, err)
	}
	t.Cleanup(func() { tr.Shutdown(context.Background()) })
	return tr
}

// Span is a span as the receiver got it, with its resource's service.name and krypton.node.id.
type Span struct {
	Service, Node string
	*tracepb.Span
}

// Spans returns every span received so far, and every export request's bytes, concatenated.
func (r *Receiver) Spans(t testing.TB) ([]Span, []byte) {
	t.Helper()
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []Span
	var raw []byte
	for _, req := range r.reqs {
		b, err := proto.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		raw = append(raw, b...)
		for _, rs := range req.GetResourceSpans() {
			var svc, node string
			for _, a := range rs.GetResource().GetAttributes() {
				switch a.GetKey() {
				case "service.name":
					svc = a.GetValue().GetStringValue()
				case string(tracing.NodeID):
					node = a.GetValue().GetStringValue()
				}
			}
			for _, ss := range rs.GetScopeSpans() {
				for _, s := range ss.GetSpans() {
					out = append(out, Span{svc, node, s})
				}
			}
		}
	}
	return out, raw
}

// Await flushes tr and polls the spans until found returns true for them, or fails the test
// after 30 s (spans end as their calls return, a moment after the answer).
func (r *Receiver) Await(t testing.TB, found func([]Span) bool, tr ...*tracing.Tracing) []Span {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		for _, x := range tr {
			x.ForceFlush(ctx)
		}
		cancel()
		spans, _ := r.Spans(t)
		if found(spans) {
			return spans
		}
		if time.Now().After(deadline) {
			for _, s := range spans {
				t.Logf("span %s/%s %q trace %x id %x parent %x", s.Service, s.Node, s.GetName(), s.GetTraceId(), s.GetSpanId(), s.GetParentSpanId())
			}
			t.Fatal("the spans looked for were not exported within 30 s")
		}
	}
}

// Find returns the first span of service named name whose parent is parent (any if nil).
func Find(spans []Span, service, name string, parent []byte) *Span {
	for i, s := range spans {
		if s.Service == service && s.GetName() == name && (parent == nil || bytes.Equal(s.GetParentSpanId(), parent)) {
			return &spans[i]
		}
	}
	return nil
}
