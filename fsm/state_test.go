package fsm

import (
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/kryptonkms/krypton/policy"
	"github.com/kryptonkms/krypton/wrap"
)

func TestCommands(t *testing.T) {
	long := strings.Repeat("a", 65)
	big := make([]byte, maxBlobLen+1)
	tests := []struct {
		name    string
		cmd     Command
		wantErr error
		check   func(t *testing.T, h *harness, res Result)
	}{
		// CreateTenant
		{"create tenant", CreateTenant{Tenant: "new", Anchor: "awskms://alias/x?region=eu-west-1", SealedL2: blob("new", 1)}, nil,
			func(t *testing.T, h *harness, res Result) {
				tn, err := h.s.Tenant("new")
				if err != nil || tn.Status != StatusActive || tn.CurrentL2 != 1 || len(tn.L2) != 1 || tn.L2[0].Status != StatusActive {
					t.Fatalf("tenant = %+v, %v", tn, err)
				}
				if res.Tenant != "new" || res.Version != 1 {
					t.Fatalf("result = %+v", res)
				}
			}},
		{"create tenant exists", CreateTenant{Tenant: "acme", Anchor: "file:///x", SealedL2: blob()}, ErrTenantExists, nil},
		{"create tenant revoked name not reused", CreateTenant{Tenant: "gone", Anchor: "file:///x", SealedL2: blob()}, ErrTenantExists, nil},
		{"create tenant bad name", CreateTenant{Tenant: "Acme", Anchor: "file:///x", SealedL2: blob()}, ErrInvalidName, nil},
		{"create tenant long name", CreateTenant{Tenant: long, Anchor: "file:///x", SealedL2: blob()}, ErrInvalidName, nil},
		{"create tenant leading dash", CreateTenant{Tenant: "-a", Anchor: "file:///x", SealedL2: blob()}, ErrInvalidName, nil},
		{"create tenant no anchor", CreateTenant{Tenant: "new", SealedL2: blob()}, ErrInvalidCommand, nil},
		{"create tenant anchor with space", CreateTenant{Tenant: "new", Anchor: "file:///a b", SealedL2: blob()}, ErrInvalidCommand, nil},
		{"create tenant no blob", CreateTenant{Tenant: "new", Anchor: "file:///x"}, ErrInvalidCommand, nil},
		{"create tenant big blob", CreateTenant{Tenant: "new", Anchor: "file:///x", SealedL2: big}, ErrInvalidCommand, nil},

		// RotateTenantKey
		{"rotate tenant key", RotateTenantKey{Tenant: "acme", Version: 2, SealedL2: blob("acme", 2)}, nil,
			func(t *testing.T, h *harness, res Result) {
				tn, _ := h.s.Tenant("acme")
				if tn.CurrentL2 != 2 || tn.L2[0].Status != StatusDecryptOnly || tn.L2[1].Status != StatusActive {
					t.Fatalf("tenant = %+v", tn)
				}
			}},
		{"rotate tenant key gap", RotateTenantKey{Tenant: "acme", Version: 3, SealedL2: blob()}, ErrBadVersion, nil},
		{"rotate tenant key same", RotateTenantKey{Tenant: "acme", Version: 1, SealedL2: blob()}, ErrBadVersion, nil},
		{"rotate tenant key unknown", RotateTenantKey{Tenant: "nope", Version: 2, SealedL2: blob()}, ErrTenantNotFound, nil},
		{"rotate tenant key locked", RotateTenantKey{Tenant: "lockd", Version: 2, SealedL2: blob()}, ErrLocked, nil},
		{"rotate tenant key revoked", RotateTenantKey{Tenant: "gone", Version: 2, SealedL2: blob()}, ErrRevoked, nil},
		{"rotate tenant key anchor deleted", RotateTenantKey{Tenant: "shred", Version: 2, SealedL2: blob()}, ErrAnchorDeleted, nil},
		{"rotate tenant key no blob", RotateTenantKey{Tenant: "acme", Version: 2}, ErrInvalidCommand, nil},

		// CreateService
		{"create service", CreateService{Tenant: "acme", Service: "mail", SealedL3: blob(), SealedBy: 1}, nil,
			func(t *testing.T, h *harness, res Result) {
				kv, err := h.s.KeyVersion("acme", "mail", 0)
				if err != nil || kv.Version != 1 || kv.Status != StatusActive || kv.SealedBy != 1 {
					t.Fatalf("key = %+v, %v", kv, err)
				}
			}},
		{"create service exists", CreateService{Tenant: "acme", Service: "pay", SealedL3: blob(), SealedBy: 1}, ErrServiceExists, nil},
		{"create service revoked name not reused", CreateService{Tenant: "acme", Service: "old", SealedL3: blob(), SealedBy: 1}, ErrServiceExists, nil},
		{"create service stale l2", CreateService{Tenant: "acme", Service: "mail", SealedL3: blob(), SealedBy: 2}, ErrBadVersion, nil},
		{"create service bad name", CreateService{Tenant: "acme", Service: "Mail", SealedL3: blob(), SealedBy: 1}, ErrInvalidName, nil},
		{"create service unknown tenant", CreateService{Tenant: "nope", Service: "mail", SealedL3: blob(), SealedBy: 1}, ErrTenantNotFound, nil},
		{"create service locked", CreateService{Tenant: "lockd", Service: "mail", SealedL3: blob(), SealedBy: 1}, ErrLocked, nil},
		{"create service revoked tenant", CreateService{Tenant: "gone", Service: "mail", SealedL3: blob(), SealedBy: 1}, ErrRevoked, nil},
		{"create service anchor deleted", CreateService{Tenant: "shred", Service: "mail", SealedL3: blob(), SealedBy: 1}, ErrAnchorDeleted, nil},
		{"create service no blob", CreateService{Tenant: "acme", Service: "mail", SealedBy: 1}, ErrInvalidCommand, nil},

		// RotateServiceKey
		{"rotate service key", RotateServiceKey{Tenant: "acme", Service: "pay", Version: 4, SealedL3: blob(), SealedBy: 1}, nil,
			func(t *testing.T, h *harness, res Result) {
				vs, _ := h.s.ListKeyVersions("acme", "pay")
				want := []Status{StatusDecryptOnly, StatusRevoked, StatusDecryptOnly, StatusActive}
				for i, kv := range vs {
					if kv.Status != want[i] || kv.Version != uint32(i+1) {
						t.Fatalf("versions[%d] = %+v, want %v", i, kv, want[i])
					}
				}
				if vs[2].RotatedAt == 0 || res.Version != 4 {
					t.Fatalf("v3 = %+v, result = %+v", vs[2], res)
				}
				if cur, _ := h.s.CurrentVersion("acme", "pay"); cur != 4 {
					t.Fatalf("current = %d", cur)
				}
			}},
		{"rotate service key gap", RotateServiceKey{Tenant: "acme", Service: "pay", Version: 5, SealedL3: blob(), SealedBy: 1}, ErrBadVersion, nil},
		{"rotate service key replay", RotateServiceKey{Tenant: "acme", Service: "pay", Version: 3, SealedL3: blob(), SealedBy: 1}, ErrBadVersion, nil},
		{"rotate service key stale l2", RotateServiceKey{Tenant: "acme", Service: "pay", Version: 4, SealedL3: blob(), SealedBy: 0}, ErrBadVersion, nil},
		{"rotate service key revoked service", RotateServiceKey{Tenant: "acme", Service: "old", Version: 2, SealedL3: blob(), SealedBy: 1}, ErrRevoked, nil},
		{"rotate service key unknown service", RotateServiceKey{Tenant: "acme", Service: "nope", Version: 2, SealedL3: blob(), SealedBy: 1}, ErrServiceNotFound, nil},
		{"rotate service key locked", RotateServiceKey{Tenant: "lockd", Service: "pay", Version: 2, SealedL3: blob(), SealedBy: 1}, ErrLocked, nil},
		{"rotate service key revoked tenant", RotateServiceKey{Tenant: "gone", Service: "pay", Version: 2, SealedL3: blob(), SealedBy: 1}, ErrRevoked, nil},
		{"rotate service key anchor deleted", RotateServiceKey{Tenant: "shred", Service: "pay", Version: 2, SealedL3: blob(), SealedBy: 1}, ErrAnchorDeleted, nil},
		{"rotate service key no blob", RotateServiceKey{Tenant: "acme", Service: "pay", Version: 4, SealedBy: 1}, ErrInvalidCommand, nil},

		// RevokeTenant
		{"revoke tenant", RevokeTenant{Tenant: "acme", Reason: "offboarded"}, nil,
			func(t *testing.T, h *harness, res Result) {
				tn, _ := h.s.Tenant("acme")
				log := h.s.RevocationLog(0)
				last := log[len(log)-1]
				if tn.Status != StatusRevoked || res.Seq != last.Seq || last.Kind != RevokedTenant || last.Reason != "offboarded" {
					t.Fatalf("tenant = %+v, result = %+v, log = %+v", tn, res, last)
				}
			}},
		{"revoke locked tenant", RevokeTenant{Tenant: "lockd"}, nil, nil},
		{"revoke anchor-deleted tenant", RevokeTenant{Tenant: "shred"}, nil, nil},
		{"revoke tenant twice", RevokeTenant{Tenant: "gone"}, ErrRevoked, nil},
		{"revoke tenant unknown", RevokeTenant{Tenant: "nope"}, ErrTenantNotFound, nil},
		{"revoke tenant long reason", RevokeTenant{Tenant: "acme", Reason: strings.Repeat("x", maxReasonLen+1)}, ErrInvalidCommand, nil},

		// RevokeService
		{"revoke service", RevokeService{Tenant: "acme", Service: "pay"}, nil,
			func(t *testing.T, h *harness, res Result) {
				if sv, _ := h.s.Service("acme", "pay"); sv.Status != StatusRevoked || sv.RevokedAt == 0 {
					t.Fatalf("service = %+v", sv)
				}
			}},
		{"revoke service of locked tenant", RevokeService{Tenant: "lockd", Service: "pay"}, nil, nil},
		{"revoke service twice", RevokeService{Tenant: "acme", Service: "old"}, ErrRevoked, nil},
		{"revoke service of revoked tenant", RevokeService{Tenant: "gone", Service: "pay"}, ErrRevoked, nil},
		{"revoke service unknown", RevokeService{Tenant: "acme", Service: "nope"}, ErrServiceNotFound, nil},

		// RevokeKeyVersion
		{"revoke key version", RevokeKeyVersion{Tenant: "acme", Service: "pay", Version: 1}, nil,
			func(t *testing.T, h *harness, res Result) {
				if kv, _ := h.s.KeyVersion("acme", "pay", 1); kv.Status != StatusRevoked {
					t.Fatalf("key = %+v", kv)
				}
			}},
		{"revoke current key version", RevokeKeyVersion{Tenant: "acme", Service: "pay", Version: 3}, nil,
			func(t *testing.T, h *harness, res Result) {
				if _, err := h.s.Usable("acme", "pay", 0, OpWrap); !errors.Is(err, ErrRevoked) {
					t.Fatalf("wrap after revoking current = %v", err)
				}
			}},
		{"revoke key version twice", RevokeKeyVersion{Tenant: "acme", Service: "pay", Version: 2}, ErrRevoked, nil},
		{"revoke key version zero", RevokeKeyVersion{Tenant: "acme", Service: "pay", Version: 0}, ErrVersionNotFound, nil},
		{"revoke key version unknown", RevokeKeyVersion{Tenant: "acme", Service: "pay", Version: 4}, ErrVersionNotFound, nil},
		{"revoke key version of revoked service", RevokeKeyVersion{Tenant: "acme", Service: "old", Version: 1}, ErrRevoked, nil},

		// LockTenant / UnlockTenant
		{"lock tenant", LockTenant{Tenant: "acme", Reason: "AccessDenied"}, nil,
			func(t *testing.T, h *harness, res Result) {
				tn, _ := h.s.Tenant("acme")
				if tn.Status != StatusLocked || tn.LockReason != "AccessDenied" || tn.LockedAt == 0 {
					t.Fatalf("tenant = %+v", tn)
				}
			}},
		{"lock locked tenant refreshes reason", LockTenant{Tenant: "lockd", Reason: "still denied"}, nil,
			func(t *testing.T, h *harness, res Result) {
				if tn, _ := h.s.Tenant("lockd"); tn.LockReason != "still denied" {
					t.Fatalf("tenant = %+v", tn)
				}
			}},
		{"lock revoked tenant", LockTenant{Tenant: "gone"}, ErrRevoked, nil},
		{"lock anchor-deleted tenant", LockTenant{Tenant: "shred"}, ErrAnchorDeleted, nil},
		{"lock unknown tenant", LockTenant{Tenant: "nope"}, ErrTenantNotFound, nil},
		{"unlock tenant", UnlockTenant{Tenant: "lockd"}, nil,
			func(t *testing.T, h *harness, res Result) {
				if tn, _ := h.s.Tenant("lockd"); tn.Status != StatusActive || tn.LockReason != "" {
					t.Fatalf("tenant = %+v", tn)
				}
			}},
		{"unlock active tenant is a no-op", UnlockTenant{Tenant: "acme"}, nil, nil},
		{"unlock revoked tenant", UnlockTenant{Tenant: "gone"}, ErrRevoked, nil},
		{"unlock anchor-deleted tenant", UnlockTenant{Tenant: "shred"}, ErrAnchorDeleted, nil},

		// SetAnchor / DeleteAnchor
		{"set anchor same key", SetAnchor{Tenant: "acme", Anchor: "file:///moved"}, nil,
			func(t *testing.T, h *harness, res Result) {
				tn, _ := h.s.Tenant("acme")
				if tn.Anchor != "file:///moved" || string(tn.L2[0].Sealed) != string(blob("acme", 1)) {
					t.Fatalf("tenant = %+v", tn)
				}
			}},
		{"set anchor resealed", SetAnchor{Tenant: "acme", Anchor: "file:///new", Resealed: [][]byte{blob("resealed")}}, nil,
			func(t *testing.T, h *harness, res Result) {
				if tn, _ := h.s.Tenant("acme"); string(tn.L2[0].Sealed) != string(blob("resealed")) {
					t.Fatalf("tenant = %+v", tn)
				}
			}},
		{"set anchor of locked tenant", SetAnchor{Tenant: "lockd", Anchor: "file:///new"}, nil, nil},
		{"set anchor resealed short", SetAnchor{Tenant: "acme", Anchor: "file:///new", Resealed: [][]byte{blob(), blob()}}, ErrBadVersion, nil},
		{"set anchor resealed empty blob", SetAnchor{Tenant: "acme", Anchor: "file:///new", Resealed: [][]byte{{}}}, ErrInvalidCommand, nil},
		{"set anchor bad uri", SetAnchor{Tenant: "acme", Anchor: ""}, ErrInvalidCommand, nil},
		{"set anchor deleted restores", SetAnchor{Tenant: "shred", Anchor: "file:///new"}, nil,
			func(t *testing.T, h *harness, _ Result) {
				if tn, _ := h.s.Tenant("shred"); tn.AnchorDeleted || tn.Anchor != "file:///new" {
					t.Fatalf("tenant = %+v", tn)
				}
				if _, err := h.s.Usable("shred", "pay", 1, OpUnwrap); err != nil {
					t.Fatalf("Usable after restore: %v", err)
				}
			}},
		{"set anchor deleted resealed", SetAnchor{Tenant: "shred", Anchor: "file:///new", Resealed: [][]byte{blob()}}, ErrInvalidCommand, nil},
		{"set anchor revoked", SetAnchor{Tenant: "gone", Anchor: "file:///new"}, ErrRevoked, nil},
		{"delete anchor", DeleteAnchor{Tenant: "acme", Reason: "customer deleted key"}, nil,
			func(t *testing.T, h *harness, res Result) {
				if _, err := h.s.Usable("acme", "pay", 0, OpWrap); !errors.Is(err, ErrAnchorDeleted) {
					t.Fatalf("usable = %v", err)
				}
				if log := h.s.RevocationLog(res.Seq - 1); len(log) != 1 || log[0].Kind != RevokedAnchor {
					t.Fatalf("log = %+v", log)
				}
			}},
		{"delete anchor of revoked tenant", DeleteAnchor{Tenant: "gone"}, nil, nil},
		{"delete anchor twice", DeleteAnchor{Tenant: "shred"}, ErrAnchorDeleted, nil},
		{"delete anchor unknown", DeleteAnchor{Tenant: "nope"}, ErrTenantNotFound, nil},

		// SetPolicy
		{"set policy", SetPolicy{Tenant: "acme", Policy: policy.Policy{Revision: 2, Rules: []policy.Rule{{Caller: "spiffe://krypton/tenant/acme/service/*", Service: "*", Operations: []policy.Op{policy.Wrap}}}}}, nil,
			func(t *testing.T, h *harness, _ Result) {
				if p, _ := h.s.Policy("acme"); p.Revision != 2 || len(p.Rules) != 1 {
					t.Fatalf("policy = %+v", p)
				}
			}},
		{"set policy no rules", SetPolicy{Tenant: "lockd", Policy: policy.Policy{Revision: 1}}, nil, nil},
		{"set policy anchor deleted", SetPolicy{Tenant: "shred", Policy: policy.Policy{Revision: 1}}, nil, nil},
		{"set policy revoked", SetPolicy{Tenant: "gone", Policy: policy.Policy{Revision: 1}}, ErrRevoked, nil},
		{"set policy unknown", SetPolicy{Tenant: "nope", Policy: policy.Policy{Revision: 1}}, ErrTenantNotFound, nil},
		{"set policy revision 0", SetPolicy{Tenant: "acme", Policy: policy.Policy{}}, ErrInvalidCommand, nil},
		{"set policy bad service", SetPolicy{Tenant: "acme", Policy: policy.Policy{Revision: 1, Rules: []policy.Rule{{Caller: "x", Service: "A", Operations: []policy.Op{policy.Wrap}}}}}, ErrInvalidName, nil},
		{"set policy no ops", SetPolicy{Tenant: "acme", Policy: policy.Policy{Revision: 1, Rules: []policy.Rule{{Caller: "x", Service: "*"}}}}, ErrInvalidCommand, nil},
		{"set policy bad op", SetPolicy{Tenant: "acme", Policy: policy.Policy{Revision: 1, Rules: []policy.Rule{{Caller: "x", Service: "*", Operations: []policy.Op{9}}}}}, ErrInvalidCommand, nil},
		{"set policy empty caller", SetPolicy{Tenant: "acme", Policy: policy.Policy{Revision: 1, Rules: []policy.Rule{{Service: "*", Operations: []policy.Op{policy.Wrap}}}}}, ErrInvalidCommand, nil},
		{"set policy caller with space", SetPolicy{Tenant: "acme", Policy: policy.Policy{Revision: 1, Rules: []policy.Rule{{Caller: "a b", Service: "*", Operations: []policy.Op{policy.Wrap}}}}}, ErrInvalidCommand, nil},

		// ApplyGovernanceEvent
		{"governance revoke", ApplyGovernanceEvent{Cursor: 7, EventID: "ev-7", Event: RevokeService{Tenant: "acme", Service: "pay"}}, nil,
			func(t *testing.T, h *harness, res Result) {
				log := h.s.RevocationLog(0)
				last := log[len(log)-1]
				if res.Cursor != 7 || h.s.GovernanceCursor() != 7 || last.Cursor != 7 || last.EventID != "ev-7" || last.RequestID != "" {
					t.Fatalf("result = %+v, cursor = %d, log = %+v", res, h.s.GovernanceCursor(), last)
				}
			}},
		{"governance refused event still advances cursor", ApplyGovernanceEvent{Cursor: 8, Event: RevokeTenant{Tenant: "elsewhere"}}, nil,
			func(t *testing.T, h *harness, res Result) {
				if !errors.Is(res.EventErr, ErrTenantNotFound) || h.s.GovernanceCursor() != 8 {
					t.Fatalf("result = %+v, cursor = %d", res, h.s.GovernanceCursor())
				}
			}},
		{"governance after mismatch", ApplyGovernanceEvent{Cursor: 9, After: 3, Event: RevokeTenant{Tenant: "acme"}}, ErrCursorMismatch, nil},
		{"governance refused by proposer", ApplyGovernanceEvent{Cursor: 9, EventID: "ev-9", Event: SetAnchor{Tenant: "shred", Anchor: "file:///other-key"}, Refused: refuse(ErrAnchorMismatch, "shred", "", 0)}, nil,
			func(t *testing.T, h *harness, res Result) {
				if !errors.Is(res.EventErr, ErrAnchorMismatch) || h.s.GovernanceCursor() != 9 {
					t.Fatalf("result = %+v, cursor = %d", res, h.s.GovernanceCursor())
				}
				if _, err := h.s.Usable("shred", "pay", 1, OpUnwrap); !errors.Is(err, ErrAnchorDeleted) {
					t.Fatalf("refused SetAnchor lifted the kill switch: %v", err)
				}
				log := h.s.RevocationLog(0)
				if last := log[len(log)-1]; last.Kind != EventAnchorSet || last.Error != "anchor-mismatch" || last.Cursor != 9 || last.Tenant != "shred" {
					t.Fatalf("log = %+v", last)
				}
			}},
		{"governance refusal without a code", ApplyGovernanceEvent{Cursor: 9, Event: UnlockTenant{Tenant: "acme"}, Refused: errors.New("x")}, ErrInvalidCommand, nil},
		{"governance non-revocation is logged", ApplyGovernanceEvent{Cursor: 9, EventID: "ev-9", Event: LockTenant{Tenant: "acme", Reason: "gov"}}, nil,
			func(t *testing.T, h *harness, res Result) {
				log := h.s.RevocationLog(0)
				if last := log[len(log)-1]; last.Kind != EventLocked || last.Error != "" || last.Cursor != 9 || last.Reason != "gov" {
					t.Fatalf("log = %+v", last)
				}
			}},
		{"governance cursor zero", ApplyGovernanceEvent{Cursor: 0, Event: RevokeTenant{Tenant: "acme"}}, ErrInvalidCommand, nil},
		{"governance no event", ApplyGovernanceEvent{Cursor: 9}, ErrInvalidCommand, nil},
		{"governance nested", ApplyGovernanceEvent{Cursor: 9, Event: ApplyGovernanceEvent{Cursor: 10, Event: RevokeTenant{Tenant: "acme"}}}, ErrInvalidCommand, nil},

		// ResyncTenant
		{"resync creates a missing tenant with its services, policy and lock", ResyncTenant{Tenant: "fresh",
			Create:   &CreateTenant{Tenant: "fresh", Anchor: "file:///l1/fresh", SealedL2: blob("fresh", 1)},
			Services: []CreateService{{Tenant: "fresh", Service: "a", SealedL3: blob("fresh", "a"), SealedBy: 1}, {Tenant: "fresh", Service: "b", SealedL3: blob("fresh", "b"), SealedBy: 1}},
			Policy:   &policy.Policy{Revision: 3},
			Lock:     "governance: locked",
		}, nil,
			func(t *testing.T, h *harness, res Result) {
				tn, err := h.s.Tenant("fresh")
				if err != nil || tn.Status != StatusLocked || tn.LockReason != "governance: locked" || len(tn.L2) != 1 {
					t.Fatalf("tenant = %+v, %v", tn, err)
				}
				for _, s := range []string{"a", "b"} {
					if kv, err := h.s.KeyVersion("fresh", s, 1); err != nil || kv.SealedBy != 1 {
						t.Fatalf("service %s: %+v, %v", s, kv, err)
					}
				}
				if p, _ := h.s.Policy("fresh"); p.Revision != 3 {
					t.Fatalf("policy = %+v", p)
				}
				kinds := map[ChangeKind]int{}
				for _, c := range h.changes {
					kinds[c.Kind]++
				}
				if kinds[TenantCreated] != 1 || kinds[ServiceCreated] != 2 || kinds[PolicySet] != 1 || kinds[TenantLocked] != 1 {
					t.Fatalf("changes = %+v", h.changes)
				}
			}},
		{"resync adds a missing service", ResyncTenant{Tenant: "acme", Services: []CreateService{{Tenant: "acme", Service: "new", SealedL3: blob(), SealedBy: 1}}}, nil,
			func(t *testing.T, h *harness, res Result) {
				if _, err := h.s.Usable("acme", "new", 0, OpWrap); err != nil {
					t.Fatalf("new service: %v", err)
				}
				if sv, _ := h.s.Service("acme", "pay"); sv.Current != 3 {
					t.Fatalf("pay touched: %+v", sv)
				}
			}},
		{"resync with nothing missing changes nothing", ResyncTenant{Tenant: "acme"}, nil,
			func(t *testing.T, h *harness, res Result) {
				if len(h.changes) != 0 {
					t.Fatalf("changes = %+v", h.changes)
				}
			}},
		{"resync lock of a locked tenant takes over the reason", ResyncTenant{Tenant: "lockd", Lock: "governance: x"}, nil,
			func(t *testing.T, h *harness, res Result) {
				if tn, _ := h.s.Tenant("lockd"); tn.Status != StatusLocked || tn.LockReason != "governance: x" {
					t.Fatalf("tenant = %+v", tn)
				}
			}},
		{"resync sets a newer policy of a tenant whose anchor is deleted", ResyncTenant{Tenant: "shred", Policy: &policy.Policy{Revision: 1}}, nil, nil},
		{"resync of a revoked tenant", ResyncTenant{Tenant: "gone"}, ErrRevoked, nil},
		{"resync creating a revoked tenant", ResyncTenant{Tenant: "gone", Create: &CreateTenant{Tenant: "gone", Anchor: "file:///x", SealedL2: blob()}}, ErrTenantExists, nil},
		{"resync of an unknown tenant without create", ResyncTenant{Tenant: "nope"}, ErrTenantNotFound, nil},
		{"resync services of an anchor-deleted tenant", ResyncTenant{Tenant: "shred", Services: []CreateService{{Tenant: "shred", Service: "x", SealedL3: blob(), SealedBy: 1}}}, ErrAnchorDeleted, nil},
		{"resync lock of an anchor-deleted tenant", ResyncTenant{Tenant: "shred", Lock: "governance: x"}, ErrAnchorDeleted, nil},
		{"resync services of a locked tenant", ResyncTenant{Tenant: "lockd", Services: []CreateService{{Tenant: "lockd", Service: "x", SealedL3: blob(), SealedBy: 1}}}, ErrLocked, nil},
		{"resync of an existing service", ResyncTenant{Tenant: "acme", Services: []CreateService{{Tenant: "acme", Service: "x", SealedL3: blob(), SealedBy: 1}, {Tenant: "acme", Service: "pay", SealedL3: blob(), SealedBy: 1}}}, ErrServiceExists, nil},
		{"resync service sealed by another L2", ResyncTenant{Tenant: "acme", Services: []CreateService{{Tenant: "acme", Service: "x", SealedL3: blob(), SealedBy: 2}}}, ErrBadVersion, nil},
		{"resync new tenant service not sealed by v1", ResyncTenant{Tenant: "fresh", Create: &CreateTenant{Tenant: "fresh", Anchor: "file:///x", SealedL2: blob()},
			Services: []CreateService{{Tenant: "fresh", Service: "x", SealedL3: blob(), SealedBy: 2}}}, ErrBadVersion, nil},
		{"resync duplicate service", ResyncTenant{Tenant: "acme", Services: []CreateService{{Tenant: "acme", Service: "x", SealedL3: blob(), SealedBy: 1}, {Tenant: "acme", Service: "x", SealedL3: blob(), SealedBy: 1}}}, ErrInvalidCommand, nil},
		{"resync service of another tenant", ResyncTenant{Tenant: "acme", Services: []CreateService{{Tenant: "lockd", Service: "x", SealedL3: blob(), SealedBy: 1}}}, ErrInvalidCommand, nil},
		{"resync create of another tenant", ResyncTenant{Tenant: "fresh", Create: &CreateTenant{Tenant: "other", Anchor: "file:///x", SealedL2: blob()}}, ErrInvalidCommand, nil},
		{"resync policy of revision 0", ResyncTenant{Tenant: "acme", Services: []CreateService{{Tenant: "acme", Service: "x", SealedL3: blob(), SealedBy: 1}}, Policy: &policy.Policy{Revision: 0}}, ErrInvalidCommand, nil},
		{"resync bad name", ResyncTenant{Tenant: "Bad Name"}, ErrInvalidName, nil},

		// SetSettings
		{"set settings", SetSettings{Settings: Settings{LeaseDuration: time.Second, AnchorCheckPeriod: time.Minute, DedupeWindow: 5}}, nil,
			func(t *testing.T, h *harness, res Result) {
				if h.s.Settings().LeaseDuration != time.Second {
					t.Fatalf("settings = %+v", h.s.Settings())
				}
			}},
		{"set settings zero lease", SetSettings{Settings: Settings{AnchorCheckPeriod: time.Minute, DedupeWindow: 5}}, ErrInvalidCommand, nil},
		{"set settings zero window", SetSettings{Settings: Settings{LeaseDuration: time.Second, AnchorCheckPeriod: time.Minute}}, ErrInvalidCommand, nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := fixture(t)
			before := h.s.Hash()
			logBefore := len(h.s.RevocationLog(0))
			res, err := h.apply(tt.cmd)
			if tt.wantErr != nil {
				if !errors.Is(err, tt.wantErr) {
					t.Fatalf("err = %v, want %v", err, tt.wantErr)
				}
				if tt.wantErr == ErrInvalidName && !errors.Is(err, wrap.ErrInvalidName) {
					t.Fatalf("err = %v, want it to match wrap.ErrInvalidName too", err)
				}
				var fe *Error
				if !errors.As(err, &fe) || !strings.HasPrefix(err.Error(), "fsm: ") {
					t.Fatalf("err = %#v, want an *Error starting with fsm:", err)
				}
				if h.s.Hash() != before || len(h.changes) != 0 {
					t.Fatalf("refused command changed the state (changes %v)", h.changes)
				}
				return
			}
			if err != nil {
				t.Fatalf("err = %v", err)
			}
			if res.Index != h.index {
				t.Fatalf("result index = %d, want %d", res.Index, h.index)
			}
			if h.s.AppliedIndex() != h.index {
				t.Fatalf("applied index = %d, want %d", h.s.AppliedIndex(), h.index)
			}
			if res.Seq != 0 && len(h.s.RevocationLog(0)) != logBefore+1 {
				t.Fatalf("revocation without a log entry")
			}
			if tt.check != nil {
				tt.check(t, h, res)
			}
		})
	}
}

func TestObserver(t *testing.T) {
	h := newHarness(t)
	var appliedSeen []uint64
	h.s.onChange = func(c Change) {
		// A query from the observer must not deadlock, and AppliedIndex
		// must not yet include the change.
		h.s.Tenant("acme")
		appliedSeen = append(appliedSeen, h.s.AppliedIndex())
		h.changes = append(h.changes, c)
	}
	h.must(CreateTenant{Tenant: "acme", Anchor: "file:///a", SealedL2: blob()})
	h.must(CreateService{Tenant: "acme", Service: "pay", SealedL3: blob(), SealedBy: 1})
	h.must(LockTenant{Tenant: "acme", Reason: "denied"})
	h.must(UnlockTenant{Tenant: "acme"})
	h.must(UnlockTenant{Tenant: "acme"}) // no-op: no change
	h.must(ApplyGovernanceEvent{Cursor: 1, Event: RevokeService{Tenant: "acme", Service: "pay", Reason: "r"}})
	h.must(ApplyGovernanceEvent{Cursor: 1, Event: RevokeTenant{Tenant: "acme"}}) // skipped
	want := []Change{
		{Index: 1, Kind: TenantCreated, Tenant: "acme", Version: 1},
		{Index: 2, Kind: ServiceCreated, Tenant: "acme", Service: "pay", Version: 1},
		{Index: 3, Kind: TenantLocked, Tenant: "acme", Reason: "denied"},
		{Index: 4, Kind: TenantUnlocked, Tenant: "acme"},
		{Index: 6, Kind: ServiceRevoked, Tenant: "acme", Service: "pay", Reason: "r"},
	}
	if len(h.changes) != len(want) {
		t.Fatalf("changes = %+v", h.changes)
	}
	for i := range want {
		if h.changes[i] != want[i] {
			t.Errorf("change %d = %+v, want %+v", i, h.changes[i], want[i])
		}
		if appliedSeen[i] != want[i].Index-1 {
			t.Errorf("change %d: AppliedIndex during OnChange = %d, want %d", i, appliedSeen[i], want[i].Index-1)
		}
	}
}

func TestRevocationIsTerminal(t *testing.T) {
	h := fixture(t)
	h.must(RevokeKeyVersion{Tenant: "acme", Service: "pay", Version: 3})
	// Rotating past a revoked current version leaves it revoked.
	h.must(RotateServiceKey{Tenant: "acme", Service: "pay", Version: 4, SealedL3: blob(), SealedBy: 1})
	for _, c := range []Command{
		UnlockTenant{Tenant: "gone"},
		SetAnchor{Tenant: "gone", Anchor: "file:///back"},
		CreateService{Tenant: "gone", Service: "new", SealedL3: blob(), SealedBy: 1},
		RevokeTenant{Tenant: "gone"},
		RevokeKeyVersion{Tenant: "acme", Service: "pay", Version: 3},
		RevokeService{Tenant: "acme", Service: "old"},
		RotateServiceKey{Tenant: "acme", Service: "old", Version: 2, SealedL3: blob(), SealedBy: 1},
	} {
		if _, err := h.apply(c); err == nil {
			t.Errorf("%s %+v succeeded", c.Type(), c)
		}
	}
	for _, v := range []uint32{2, 3} {
		if kv, _ := h.s.KeyVersion("acme", "pay", v); kv.Status != StatusRevoked {
			t.Errorf("v%d = %v", v, kv.Status)
		}
	}
	if _, err := h.s.Usable("gone", "pay", 1, OpUnwrap); !errors.Is(err, ErrRevoked) {
		t.Errorf("usable gone = %v", err)
	}
}

func TestUsable(t *testing.T) {
	h := fixture(t)
	tests := []struct {
		tenant, service string
		version         uint32
		op              Op
		want            uint32
		wantErr         error
	}{
		{"acme", "pay", 0, OpWrap, 3, nil},
		{"acme", "pay", 3, OpWrap, 3, nil},
		{"acme", "pay", 3, OpUnwrap, 3, nil},
		{"acme", "pay", 1, OpUnwrap, 1, nil},
		{"acme", "pay", 1, OpWrap, 0, ErrDecryptOnly},
		{"acme", "pay", 2, OpUnwrap, 0, ErrRevoked},
		{"acme", "pay", 2, OpWrap, 0, ErrRevoked},
		{"acme", "pay", 4, OpUnwrap, 0, ErrVersionNotFound},
		{"acme", "pay", 0, OpUnwrap, 0, ErrVersionNotFound},
		{"acme", "old", 1, OpUnwrap, 0, ErrRevoked},
		{"acme", "nope", 1, OpUnwrap, 0, ErrServiceNotFound},
		{"nope", "pay", 1, OpUnwrap, 0, ErrTenantNotFound},
		{"lockd", "pay", 1, OpUnwrap, 0, ErrLocked},
		{"gone", "pay", 1, OpUnwrap, 0, ErrRevoked},
		{"shred", "pay", 1, OpUnwrap, 0, ErrAnchorDeleted},
	}
	for _, tt := range tests {
		got, err := h.s.Usable(tt.tenant, tt.service, tt.version, tt.op)
		if got != tt.want || err != tt.wantErr { // bare sentinels: == on purpose
			t.Errorf("Usable(%s, %s, %d, %d) = %d, %v; want %d, %v", tt.tenant, tt.service, tt.version, tt.op, got, err, tt.want, tt.wantErr)
		}
	}
}

func TestQueriesReturnCopies(t *testing.T) {
	h := fixture(t)
	kv, _ := h.s.KeyVersion("acme", "pay", 1)
	kv.Sealed[0] ^= 0xff
	tn, _ := h.s.Tenant("acme")
	tn.L2[0].Sealed[0] ^= 0xff
	tn.L2[0].Status = StatusRevoked
	if kv2, _ := h.s.KeyVersion("acme", "pay", 1); kv2.Sealed[0] == kv.Sealed[0] {
		t.Fatal("KeyVersion aliases the state")
	}
	if tn2, _ := h.s.Tenant("acme"); tn2.L2[0].Sealed[0] == tn.L2[0].Sealed[0] || tn2.L2[0].Status != StatusActive {
		t.Fatal("Tenant aliases the state")
	}
	if got := len(h.s.ListTenants()); got != 4 {
		t.Fatalf("tenants = %d", got)
	}
	if svs, _ := h.s.ListServices("acme"); len(svs) != 2 || svs[0].Name != "old" {
		t.Fatalf("services = %+v", svs)
	}
	if _, err := h.s.ListServices("nope"); !errors.Is(err, ErrTenantNotFound) {
		t.Fatal(err)
	}
	if _, err := h.s.KeyVersion("acme", "pay", 9); !errors.Is(err, ErrVersionNotFound) {
		t.Fatal(err)
	}
	// A query never echoes a name that is not valid.
	if _, err := h.s.Service("acme", "PAY\x00secret"); !errors.Is(err, ErrServiceNotFound) || strings.Contains(err.Error(), "secret") {
		t.Fatal(err)
	}
	log := h.s.RevocationLog(0)
	if len(log) != 4 || h.s.RevocationLog(3)[0].Seq != 4 || h.s.RevocationLog(4) != nil {
		t.Fatalf("log = %+v", log)
	}
}
