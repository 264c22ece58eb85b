package gateway_test

import (
	"bytes"
	"encoding/hex"
	"strconv"
	"testing"

	tracepb "go.opentelemetry.io/proto/otlp/trace/v1"
	"google.golang.org/grpc/metadata"

	"github.com/kryptonkms/krypton/gateway"
	"github.com/kryptonkms/krypton/internal/tracing"
	"github.com/kryptonkms/krypton/internal/tracing/tracingtest"
	"github.com/kryptonkms/krypton/region"
	"github.com/kryptonkms/krypton/region/regiontest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// TestTraceGatewayToRegion sends one GenerateDataKey through a traced gateway to a traced region
// node, with both exporting to a real OTLP receiver, and checks that one trace holds the
// gateway's call, batch and region call and the node's RPC, key check and crypto, each the child
// of the one before; that the application's own trace context (a sampled traceparent it sent) is
// only a link, not the parent; and that neither the data key nor any attribute outside the
// allowlist left in a span.
func TestTraceGatewayToRegion(t *testing.T) {
	rcv := tracingtest.Start(t)
	var node *tracing.Tracing
	r := regiontest.Start(t, 1, regiontest.WithConfig(func(c *region.Config) {
		node = rcv.Tracing(t, "krypton-region", c.NodeID)
		c.TracerProvider = node.Provider()
	}))
	setupTenant(t, r, "acme", "payments")
	gwTrace := rcv.Tracing(t, "krypton-gateway", "")
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
	all := rcv.Await(t, func(spans []tracingtest.Span) bool {
		chain, crypto = traceOf(spans, want)
		return chain != nil && crypto != nil
	}, gwTrace, node)
	_, raw := rcv.Spans(t)

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
		for _, a := range s.GetAttributes() {
			if !allowed[a.GetKey()] {
				t.Errorf("span %s %q carries attribute %s", s.Service, s.GetName(), a.GetKey())
			}
		}
		if len(s.GetEvents()) > 0 || s.GetStatus().GetMessage() != "" {
			t.Errorf("span %s %q carries events or a status message", s.Service, s.GetName())
		}
	}
}

// traceOf finds, among spans, a chain matching want (each the parent of the next) and the
// region.crypto span under the chain's region server span.
func traceOf(spans []tracingtest.Span, want []struct{ service, name string }) ([]*tracepb.Span, *tracepb.Span) {
	root := tracingtest.Find(spans, want[0].service, want[0].name, nil)
	if root == nil {
		return nil, nil
	}
	chain := []*tracepb.Span{root.Span}
	for _, w := range want[1:] {
		s := tracingtest.Find(spans, w.service, w.name, chain[len(chain)-1].GetSpanId())
		if s == nil || !bytes.Equal(s.GetTraceId(), root.GetTraceId()) {
			return nil, nil
		}
		chain = append(chain, s.Span)
	}
	crypto := tracingtest.Find(spans, "krypton-region", "region.crypto", chain[4].GetSpanId())
	if crypto == nil {
		return chain, nil
	}
	return chain, crypto.Span
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
