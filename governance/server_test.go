package governance_test

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/governance/governancetest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

const devAnchor = "file:///tmp/governance-test/root.key"

func rid() string { return governancetest.RequestID() }

func wantCode(t *testing.T, err error, code codes.Code) {
	t.Helper()
	if status.Code(err) != code {
		t.Fatalf("got %v, want %v", err, code)
	}
}

// recv reads one message of a watch stream in a goroutine, so that the test
// can bound the wait.
func recv(t *testing.T, s kv1.GovernanceService_WatchRevocationsClient) *kv1.WatchRevocationsResponse {
	t.Helper()
	type res struct {
		m   *kv1.WatchRevocationsResponse
		err error
	}
	ch := make(chan res, 1)
	go func() {
		m, err := s.Recv()
		ch <- res{m, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			t.Fatalf("watch: %v", r.err)
		}
		return r.m
	case <-time.After(20 * time.Second):
		t.Fatal("watch: no message in 20 s")
	}
	return nil
}

// recvEvents reads messages until it has n events, skipping heartbeats.
func recvEvents(t *testing.T, s kv1.GovernanceService_WatchRevocationsClient, n int) []*kv1.RevocationEvent {
	t.Helper()
	var out []*kv1.RevocationEvent
	for len(out) < n {
		m := recv(t, s)
		out = append(out, m.GetEvents()...)
	}
	return out
}

func TestSingleNodeFlow(t *testing.T) {
	g := governancetest.Start(t, 1, governancetest.WithHeartbeat(50*time.Millisecond))
	op := g.Client(0)
	ctx := g.Context(60 * time.Second)

	g.CreateTenant("acme", devAnchor, "eu", "us")
	g.CreateTenant("other", devAnchor, "us")
	if _, err := op.CreateService(ctx, &kv1.GovernanceCreateServiceRequest{RequestId: rid(), Tenant: "acme", Service: "billing"}); err != nil {
		t.Fatal(err)
	}

	eu := g.NodeClient(0, "eu", "eu-1")
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := eu.WatchRevocations(wctx, &kv1.WatchRevocationsRequest{Region: "eu"})
	if err != nil {
		t.Fatal(err)
	}
	got := recvEvents(t, w, 2)
	if v := gatherValue(t, g.Nodes[0].Registry(), "krypton_governance_watch_streams", "eu"); v != 1 {
		t.Fatalf("watch streams metric: %v", v)
	}
	if got[0].GetKind() != kv1.EventKind_EVENT_KIND_CREATE_TENANT || got[0].GetCursor() != 1 ||
		got[1].GetKind() != kv1.EventKind_EVENT_KIND_CREATE_SERVICE || got[1].GetCursor() != 3 {
		t.Fatalf("backlog: %v", got)
	}

	// Revoke with wait returns only once eu and us have reported.
	type res struct {
		r   *kv1.RevokeResponse
		err error
	}
	done := make(chan res, 1)
	go func() {
		r, err := op.Revoke(ctx, &kv1.RevokeRequest{RequestId: "rev-1", Target: &kv1.KeyScope{Tenant: "acme", Service: "billing"}, Reason: "test", Wait: true})
		done <- res{r, err}
	}()
	ev := recvEvents(t, w, 1)[0]
	if ev.GetKind() != kv1.EventKind_EVENT_KIND_REVOKE_SERVICE || ev.GetCursor() != 4 {
		t.Fatalf("live event: %v", ev)
	}
	if _, err := eu.ReportCursor(ctx, &kv1.ReportCursorRequest{Region: "eu", AppliedCursor: 4}); err != nil {
		t.Fatal(err)
	}
	select {
	case r := <-done:
		t.Fatalf("revoke returned before us reported: %v %v", r.r, r.err)
	default:
	}
	us := g.NodeClient(0, "us", "us-1")
	if _, err := us.ReportCursor(ctx, &kv1.ReportCursorRequest{Region: "us", AppliedCursor: 4}); err != nil {
		t.Fatal(err)
	}
	r := <-done
	if r.err != nil {
		t.Fatal(r.err)
	}
	if len(r.r.GetRegions()) != 2 || r.r.GetEvent().GetCursor() != 4 {
		t.Fatalf("revoke: %v", r.r)
	}

	// A node of eu may not report for us.
	_, err = eu.ReportCursor(ctx, &kv1.ReportCursorRequest{Region: "us", AppliedCursor: 4})
	wantCode(t, err, codes.PermissionDenied)
	// Nor call operator RPCs.
	_, err = eu.Status(ctx, &kv1.GovernanceStatusRequest{})
	wantCode(t, err, codes.PermissionDenied)

	// Heartbeats carry the head.
	for {
		m := recv(t, w)
		if len(m.GetEvents()) == 0 && m.GetHeadCursor() == 4 {
			break
		}
	}
	cancel()
	for {
		if _, err := w.Recv(); err != nil {
			if !errors.Is(err, io.EOF) && status.Code(err) != codes.Canceled {
				t.Fatal(err)
			}
			break
		}
	}

	// Out of range.
	w2, err := eu.WatchRevocations(ctx, &kv1.WatchRevocationsRequest{Region: "eu", AfterCursor: 99})
	if err == nil {
		_, err = w2.Recv()
	}
	wantCode(t, err, codes.OutOfRange)

	st, err := op.Status(ctx, &kv1.GovernanceStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.GetHeadCursor() != 4 || len(st.GetRegions()) != 2 {
		t.Fatalf("status: %v", st)
	}
}
