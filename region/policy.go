package region

import (
	"context"
	"strconv"
	"sync"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/fsm"
	"github.com/kryptonkms/krypton/internal/audit"
	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/policy"
	"github.com/kryptonkms/krypton/transport"
)

// Access policy on the wrap path (DESIGN.md, "Access policy"; package policy's DESIGN.md). Governance
// sets each tenant's policy; the region's state machine replicates it; every node compiles it once
// per revision (on the fsm PolicySet change) with policy.Compile and checks each call against the
// compiled form, which allocates nothing per call.

// policyTable holds the compiled policy of every tenant that has one.
type policyTable struct {
	mu sync.RWMutex // guards m; a compiled policy is immutable
	m  map[string]*policy.Compiled
}

func newPolicyTable() *policyTable { return &policyTable{m: map[string]*policy.Compiled{}} }

func (t *policyTable) get(tenant string) *policy.Compiled {
	t.mu.RLock()
	p := t.m[tenant]
	t.mu.RUnlock()
	return p
}

// set installs a tenant's policy; a policy without rules is the default rule and needs no entry.
func (t *policyTable) set(tenant string, p policy.Policy) {
	var c *policy.Compiled
	if len(p.Rules) > 0 {
		c = policy.Compile(p)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if c == nil {
		delete(t.m, tenant)
		return
	}
	t.m[tenant] = c
}

// rebuild compiles every tenant's policy afresh (after a snapshot restore).
func (t *policyTable) rebuild(s *fsm.State) {
	m := map[string]*policy.Compiled{}
	for _, tn := range s.ListTenants() {
		if p, err := s.Policy(tn.Name); err == nil && len(p.Rules) > 0 {
			m[tn.Name] = policy.Compile(p)
		}
	}
	t.mu.Lock()
	t.m = m
	t.mu.Unlock()
}

// authorize checks that the caller may use tenant's service for op: by the tenant's policy from
// governance, or by default exactly the tenant and service its certificate names. A refusal is
// PermissionDenied and is written to the audit log.
func (n *Node) authorize(ctx context.Context, tenant, service string, op policy.Op) error {
	id, ok := transport.IdentityFromContext(ctx)
	if !ok {
		return status.Error(codes.Unauthenticated, "transport: no verified client certificate")
	}
	p := n.policies.get(tenant)
	if id.Kind == pki.KindService && p.Permits(id.Tenant, id.Service, tenant, service, op) {
		return nil
	}
	return n.denied(id, tenant, service, op, p.Revision())
}

// denied records and returns a policy refusal. Names from the request are echoed only if they
// are valid names.
func (n *Node) denied(id pki.Identity, tenant, service string, op policy.Op, revision uint64) error {
	tenant, service = validOrEmpty(tenant), validOrEmpty(service)
	opName := op.String()
	detail := map[string]string{"operation": opName}
	rule := "the default rule (a caller may use only the tenant and service its certificate names)"
	if revision > 0 {
		detail["policy-revision"] = strconv.FormatUint(revision, 10)
		rule = "tenant " + tenant + "'s policy (revision " + strconv.FormatUint(revision, 10) + ")"
	}
	n.recordAs(audit.Event{Kind: auditPolicyDenied, Actor: id.String(), Tenant: tenant, Service: service, Code: codes.PermissionDenied.String(), Detail: detail})
	return status.Errorf(codes.PermissionDenied, "region: %s may not %s with the key of tenant %q, service %q: refused by %s", id.String(), opName, tenant, service, rule)
}
