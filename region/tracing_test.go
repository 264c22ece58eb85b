package region_test

import (
	"bytes"
	"sync"
	"testing"
	"time"

	"github.com/kryptonkms/krypton/internal/tracing"
	"github.com/kryptonkms/krypton/internal/tracing/tracingtest"
	"github.com/kryptonkms/krypton/region"
	"github.com/kryptonkms/krypton/region/regiontest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// TestTraceForwardedWrite: a write taken by a follower is forwarded to the leader over the
// cluster RPC, and its trace goes with it: the leader's cluster.apply span is the child of the
// follower's region.apply span, in the trace of the follower's CreateKey call, as a real OTLP
// receiver got them.
func TestTraceForwardedWrite(t *testing.T) {
	rcv := tracingtest.Start(t)
	var mu sync.Mutex
	var trs []*tracing.Tracing
	r := regiontest.Start(t, 3, regiontest.WithConfig(func(c *region.Config) {
		tr := rcv.Tracing(t, "krypton-region", c.NodeID)
		mu.Lock()
		trs = append(trs, tr)
		mu.Unlock()
		c.TracerProvider = tr.Provider()
	}))
	leader := r.WaitLeader()
	if _, err := r.AdminClient(leader).CreateTenant(r.Context(30*time.Second), &kv1.CreateTenantRequest{RequestId: "t", Tenant: "acme", AnchorUri: r.Anchor}); err != nil {
		t.Fatal(err)
	}
	follower := r.Followers()[0]
	if _, err := r.AdminClient(follower).CreateKey(r.Context(30*time.Second), &kv1.CreateKeyRequest{RequestId: "k", Tenant: "acme", Service: "payments"}); err != nil {
		t.Fatal(err)
	}
	fid, lid := r.Cfgs[follower].NodeID, r.Cfgs[leader].NodeID
	mu.Lock()
	flush := append([]*tracing.Tracing(nil), trs...)
	mu.Unlock()
	rcv.Await(t, func(spans []tracingtest.Span) bool {
		for _, call := range spans {
			if call.Node != fid || call.GetName() != "krypton.v1.AdminService/CreateKey" {
				continue
			}
			apply := tracingtest.Find(spans, "krypton-region", "region.apply", call.GetSpanId())
			if apply == nil || apply.Node != fid {
				continue
			}
			at := tracingtest.Find(spans, "krypton-region", "cluster.apply", apply.GetSpanId())
			if at != nil && at.Node == lid && bytes.Equal(at.GetTraceId(), call.GetTraceId()) {
				return true
			}
		}
		return false
	}, flush...)
}
