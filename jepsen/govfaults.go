package jepsen

import (
	"context"
	"fmt"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// govLeader asks every running governance node and returns the index of the one that names
// itself leader in the highest term, or -1.
func (nm *nemesis) govLeader(ctx context.Context) int {
	best, term := -1, uint64(0)
	for j, nd := range nm.c.gov {
		if !runningNode(nd) {
			continue
		}
		g, err := nm.cs.gov(j)
		if err != nil {
			continue
		}
		cctx, cancel := context.WithTimeout(ctx, time.Second)
		st, err := g.Status(cctx, &kv1.GovernanceStatusRequest{})
		cancel()
		if err == nil && st.GetLeaderId() == nd.id && st.GetTerm() >= term {
			best, term = j, st.GetTerm()
		}
	}
	return best
}

// waitGovLeader waits up to d for a governance leader.
func (nm *nemesis) waitGovLeader(ctx context.Context, d time.Duration) int {
	deadline := time.Now().Add(d)
	for {
		if g := nm.govLeader(ctx); g >= 0 || time.Now().After(deadline) || ctx.Err() != nil {
			return g
		}
		sleep(ctx, 200*time.Millisecond)
	}
}

// killSwitch pulls one tenant's kill switch at governance (DeleteAnchor with wait), holds, and
// sets the same anchor again. f.Acked is when the deletion was acknowledged (every region applied
// and fenced it: from then on no node may serve the tenant), f.Lifted when the first SetAnchor
// was invoked; checkGovernanceKillSwitch checks the window between them.
func (nm *nemesis) killSwitch(ctx context.Context, hold time.Duration, f *Fault) error {
	c := nm.c
	t := nm.r.IntN(len(c.anchors))
	tenant := fmt.Sprintf("t%d", t+1)
	f.Detail = "tenant " + tenant
	nm.logf("nemesis: governance kill switch of %s for %s", tenant, hold)
	id := fmt.Sprintf("jepsen-kill-%s-%d", tenant, nm.h.now())
	timeout := writeTimeout + 2*c.timing.Lease + 2*time.Second
	err := callGov(ctx, nm.cs, nm.r.IntN(len(c.gov)), timeout, func(cctx context.Context, g kv1.GovernanceServiceClient) error {
		_, err := g.DeleteAnchor(cctx, &kv1.DeleteAnchorRequest{RequestId: id, Tenant: tenant, Reason: "jepsen", Wait: true})
		return err
	})
	if err == nil {
		f.Acked = nm.h.now()
	} else {
		// It may still have committed: lift it all the same.
		f.Detail += " (deletion not acknowledged: " + errText(err) + ")"
	}
	sleep(ctx, hold)
	f.Lifted = nm.h.now()
	rid := fmt.Sprintf("jepsen-restore-%s-%d", tenant, nm.h.now())
	deadline := time.Now().Add(30 * time.Second)
	consent, err := c.consent(tenant, c.anchorURI(t), rid)
	if err != nil {
		return err
	}
	for ctx.Err() == nil {
		err = callGov(ctx, nm.cs, nm.r.IntN(len(c.gov)), 10*time.Second, func(cctx context.Context, g kv1.GovernanceServiceClient) error {
			_, err := g.SetAnchor(cctx, &kv1.SetAnchorRequest{RequestId: rid, Tenant: tenant, AnchorUri: c.anchorURI(t), Consent: consent})
			return err
		})
		if err == nil || time.Now().After(deadline) {
			break
		}
		sleep(ctx, 500*time.Millisecond)
	}
	if err != nil {
		return fmt.Errorf("jepsen: setting %s's anchor again at governance: %w", tenant, err)
	}
	return nil
}

// callGov calls f with governance node n mod the governance nodes under a timeout. While f fails
// UNAVAILABLE (the node is down, or has no leader) and time remains, it calls f again on the next
// governance node, as an operator's client would: every governance write carries a request id,
// so a retry returns the first attempt's result if that one committed.
func callGov(ctx context.Context, cs *conns, n int, timeout time.Duration, f func(context.Context, kv1.GovernanceServiceClient) error) error {
	cctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for try := 0; ; try++ {
		g, err := cs.gov((n + try) % len(cs.c.gov))
		if err != nil {
			return err
		}
		err = f(cctx, g)
		if status.Code(err) != codes.Unavailable || cctx.Err() != nil {
			return err
		}
		sleep(cctx, 100*time.Millisecond)
		if cctx.Err() != nil {
			return err
		}
	}
}
