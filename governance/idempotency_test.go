package governance_test

import (
	"encoding/json"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"

	"github.com/kryptonkms/krypton/governance/governancetest"
	"github.com/kryptonkms/krypton/internal/owner"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// TestRequestIDReuseIsRefused is issue 14, finding 10, on the governance plane: for every write,
// the request id of a first call reused with other parameters is InvalidArgument and changes
// nothing (the replicated state encodes to the same bytes), and an identical retry gets the first
// call's answer without appending an event.
func TestRequestIDReuseIsRefused(t *testing.T) {
	g := governancetest.Start(t, 1)
	op := g.Client(0)
	ctx := g.Context(60 * time.Second)
	g.CreateTenant("globex", devAnchor, "eu")
	// state is the replicated state but for the log's clock, which every entry advances.
	state := func() string {
		b, err := g.Nodes[0].FSM().Encode()
		if err != nil {
			t.Fatal(err)
		}
		var m map[string]json.RawMessage
		if err := json.Unmarshal(b, &m); err != nil {
			t.Fatal(err)
		}
		delete(m, "last-time")
		b, _ = json.Marshal(m)
		return string(b)
	}
	// check makes the first call, each reuse, and the retry.
	check := func(what string, first func() (proto.Message, error), reuses ...func() (proto.Message, error)) {
		t.Helper()
		want, err := first()
		if err != nil {
			t.Fatalf("%s: %v", what, err)
		}
		before := state()
		for i, reuse := range reuses {
			_, err := reuse()
			wantCode(t, err, codes.InvalidArgument)
			if state() != before {
				t.Fatalf("%s: reuse %d changed the state", what, i)
			}
		}
		got, err := first()
		if err != nil {
			t.Fatalf("%s: retry: %v", what, err)
		}
		if !proto.Equal(got, want) {
			t.Fatalf("%s: retry answered %v, first call %v", what, got, want)
		}
		if state() != before {
			t.Fatalf("%s: the retry changed the state", what)
		}
	}
	createTenant := func(tenant, anchor string, regions ...string) func() (proto.Message, error) {
		return func() (proto.Message, error) {
			return op.CreateTenant(ctx, &kv1.GovernanceCreateTenantRequest{RequestId: "ct", Tenant: tenant, AnchorUri: anchor, Regions: regions, OwnerPublicKey: g.Owner.Public})
		}
	}
	check("CreateTenant", createTenant("acme", devAnchor, "eu"),
		createTenant("initech", devAnchor, "eu"), createTenant("acme", devAnchor+"2", "eu"), createTenant("acme", devAnchor, "eu", "us"))

	createService := func(tenant, service string) func() (proto.Message, error) {
		return func() (proto.Message, error) {
			return op.CreateService(ctx, &kv1.GovernanceCreateServiceRequest{RequestId: "cs", Tenant: tenant, Service: service})
		}
	}
	check("CreateService", createService("acme", "sa"), createService("acme", "sb"), createService("globex", "sa"))
	if _, err := op.CreateService(ctx, &kv1.GovernanceCreateServiceRequest{RequestId: "cs-sb", Tenant: "acme", Service: "sb"}); err != nil {
		t.Fatal(err)
	}

	setAnchor := func(tenant, anchor string) func() (proto.Message, error) {
		return func() (proto.Message, error) {
			consent := g.Owner.Consent(t, owner.Statement{Tenant: tenant, Op: owner.OpSetAnchor, Anchor: anchor, RequestID: "sa"})
			return op.SetAnchor(ctx, &kv1.SetAnchorRequest{RequestId: "sa", Tenant: tenant, AnchorUri: anchor, Consent: consent})
		}
	}
	check("SetAnchor", setAnchor("acme", devAnchor+"3"), setAnchor("globex", devAnchor+"3"), setAnchor("acme", devAnchor+"4"))

	setPolicy := func(tenant, service string) func() (proto.Message, error) {
		return func() (proto.Message, error) {
			return op.SetPolicy(ctx, &kv1.SetPolicyRequest{RequestId: "sp", Policy: &kv1.Policy{Tenant: tenant, Rules: []*kv1.PolicyRule{
				{Caller: "spiffe://krypton/tenant/acme/**", Service: service, Operations: []kv1.Operation{kv1.Operation_OPERATION_WRAP}},
			}}})
		}
	}
	check("SetPolicy", setPolicy("acme", "*"), setPolicy("acme", "sa"), setPolicy("globex", "*"))

	lock := func(tenant, reason string) func() (proto.Message, error) {
		return func() (proto.Message, error) {
			return op.LockTenant(ctx, &kv1.GovernanceLockTenantRequest{RequestId: "lk", Tenant: tenant, Reason: reason})
		}
	}
	check("LockTenant", lock("acme", "test"), lock("globex", "test"), lock("acme", "another reason"))

	unlock := func(tenant string) func() (proto.Message, error) {
		return func() (proto.Message, error) {
			return op.UnlockTenant(ctx, &kv1.GovernanceUnlockTenantRequest{RequestId: "ul", Tenant: tenant})
		}
	}
	check("UnlockTenant", unlock("acme"), unlock("globex"))

	resync := func(tenant string) func() (proto.Message, error) {
		return func() (proto.Message, error) {
			return op.ResyncTenant(ctx, &kv1.ResyncTenantRequest{RequestId: "rs", Tenant: tenant})
		}
	}
	check("ResyncTenant", resync("acme"), resync("globex"))

	revoke := func(scope *kv1.KeyScope, reason string) func() (proto.Message, error) {
		return func() (proto.Message, error) {
			return op.Revoke(ctx, &kv1.RevokeRequest{RequestId: "rv", Target: scope, Reason: reason})
		}
	}
	check("Revoke", revoke(&kv1.KeyScope{Tenant: "acme", Service: "sa", Version: 1}, "test"),
		revoke(&kv1.KeyScope{Tenant: "acme", Service: "sb", Version: 1}, "test"),
		revoke(&kv1.KeyScope{Tenant: "acme", Service: "sa", Version: 2}, "test"),
		revoke(&kv1.KeyScope{Tenant: "acme", Service: "sa"}, "test"),
		revoke(&kv1.KeyScope{Tenant: "globex"}, "test"),
		revoke(&kv1.KeyScope{Tenant: "acme", Service: "sa", Version: 1}, "another reason"))

	deleteAnchor := func(tenant, reason string) func() (proto.Message, error) {
		return func() (proto.Message, error) {
			return op.DeleteAnchor(ctx, &kv1.DeleteAnchorRequest{RequestId: "da", Tenant: tenant, Reason: reason})
		}
	}
	check("DeleteAnchor", deleteAnchor("globex", "test"), deleteAnchor("acme", "test"), deleteAnchor("globex", "another reason"))
}

// TestReasonRequired is issue 14, finding 12, on the governance plane: the writes whose reason
// the audit log records refuse an empty, blank or oversized one before anything is proposed.
func TestReasonRequired(t *testing.T) {
	g := governancetest.Start(t, 1)
	op := g.Client(0)
	ctx := g.Context(30 * time.Second)
	g.CreateTenant("acme", devAnchor, "eu")
	before, err := g.Nodes[0].FSM().Encode()
	if err != nil {
		t.Fatal(err)
	}
	for _, reason := range []string{"", "  ", strings.Repeat("x", 2<<20)} {
		_, err := op.Revoke(ctx, &kv1.RevokeRequest{RequestId: rid(), Target: &kv1.KeyScope{Tenant: "acme"}, Reason: reason})
		wantCode(t, err, codes.InvalidArgument)
		_, err = op.LockTenant(ctx, &kv1.GovernanceLockTenantRequest{RequestId: rid(), Tenant: "acme", Reason: reason})
		wantCode(t, err, codes.InvalidArgument)
		_, err = op.DeleteAnchor(ctx, &kv1.DeleteAnchorRequest{RequestId: rid(), Tenant: "acme", Reason: reason})
		wantCode(t, err, codes.InvalidArgument)
	}
	after, err := g.Nodes[0].FSM().Encode()
	if err != nil {
		t.Fatal(err)
	}
	if string(after) != string(before) {
		t.Fatal("a refused reason changed the state")
	}
}
