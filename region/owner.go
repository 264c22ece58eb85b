package region

import (
	"context"
	"errors"
	"maps"
	"slices"
	"strings"
	"time"

	"google.golang.org/grpc/codes"

	"github.com/kryptonkms/krypton/fsm"
	"github.com/kryptonkms/krypton/internal/owner"
	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// Tenant owner keys in a region that is not governed (docs/security.md, "Tenant owner consent"):
// the region holds each tenant's owner public key (fsm, owner.go), and its own rekey of a tenant
// needs the owner's consent, checked here before anything is opened or proposed, and again by the
// state machine when it applies the rekey. A governed region refuses both writes: governance
// holds the owner keys and moves anchors.

// AuditOwnerSet is the audit record of a region-level owner key registration or handover.
const AuditOwnerSet = "tenant.owner.set"

// ownerKeyPEM checks an owner public key from a request ("" for none) and returns it parsed (nil
// for none). The refusal names the fix and never echoes the key.
func ownerKeyPEM(pem string) (*owner.PublicKey, error) {
	if pem == "" {
		return nil, nil
	}
	k, err := owner.ParsePublicKey(pem)
	if err != nil {
		return nil, transport.Invalid("region: " + strings.TrimPrefix(err.Error(), "owner: malformed: "))
	}
	return k, nil
}

// checkConsent verifies a consent against the tenant's owner key as this node holds it, before
// anything is proposed, with an error that says what is wrong and how to make a consent (how);
// the state machine verifies it again where it applies (and refuses a consent used before). It
// returns the owner key's fingerprint ("" if the tenant has none). needKey refuses a tenant
// without an owner key (FailedPrecondition, naming `tenant set-owner`); otherwise such a tenant
// takes no consent (its first owner key). It first catches up with the leader: a follower may not
// yet have applied an owner key registered or replaced a moment ago, and must judge the consent
// against the key the region holds, not an older one (a rekey or handover is rare; one barrier is
// cheap beside it).
func (n *Node) checkConsent(ctx context.Context, consent string, st owner.Statement, how string, needKey bool) (string, error) {
	if err := n.catchUp(ctx); err != nil {
		if errors.Is(err, context.Canceled) || (errors.Is(err, context.DeadlineExceeded) && ctx.Err() != nil) {
			return "", ctx.Err()
		}
		return "", errCannotKnow
	}
	pem, fp, err := n.state.OwnerKey(st.Tenant)
	if err != nil {
		return "", err
	}
	if pem == "" {
		if needKey {
			return "", transport.Coded(codes.FailedPrecondition, "region: the tenant has no owner key, so it cannot be rekeyed on the operator's word alone; "+
				"register the owner's key with `krypton tenant set-owner -owner-pub <file> "+nameOr(st.Tenant, "<tenant>")+
				"` (the owner makes it with `krypton owner keygen`), then give the owner's consent with -consent")
		}
		if consent != "" {
			return "", transport.Invalid("region: the tenant has no owner key yet: registering its first takes no consent")
		}
		return "", nil
	}
	key, err := owner.ParsePublicKey(pem)
	if err != nil {
		return "", &fsm.Error{Err: fsm.ErrConsentDenied, Tenant: st.Tenant}
	}
	tail := "; the tenant's owner (key " + fp + ") makes a consent with `" + how + "`, and the operator gives it with -consent consent.jws"
	if _, err := owner.Verify(consent, key, st, time.Now()); err != nil {
		if errors.Is(err, owner.ErrMalformed) {
			return "", transport.Invalid("region: " + strings.TrimPrefix(err.Error(), "owner: malformed: ") + tail)
		}
		return "", transport.Coded(codes.PermissionDenied, "region: "+strings.TrimPrefix(err.Error(), "owner: ")+tail)
	}
	return fp, nil
}

// rekeyConsentHow is the command that makes the owner's consent to a rekey.
func (n *Node) rekeyConsentHow(tenant, anchorURI string) string {
	return "krypton owner consent -key <owner.key> -op rekey -anchor " + shellWord(anchorOr(anchorURI)) + " -region " + shellWord(n.cfg.Region) +
		" -request-id <id> -out consent.jws " + nameOr(tenant, "<tenant>")
}

// SetOwnerKey registers a tenant's owner public key, or replaces it with the current key's consent.
func (n *Node) SetOwnerKey(ctx context.Context, requestID, tenant, pem, consent string) (fsm.Tenant, error) {
	if err := transport.CheckName("tenant", tenant); err != nil {
		return fsm.Tenant{}, err
	}
	if pem == "" {
		return fsm.Tenant{}, transport.Invalid("region: owner_public_key is required (krypton owner keygen makes one)")
	}
	nk, err := ownerKeyPEM(pem)
	if err != nil {
		return fsm.Tenant{}, err
	}
	t, err := freshRead(ctx, n, func() (fsm.Tenant, error) { return n.state.Tenant(tenant) })
	if err != nil {
		return fsm.Tenant{}, err
	}
	if t.Status == fsm.StatusRevoked {
		return fsm.Tenant{}, &fsm.Error{Err: fsm.ErrRevoked, Tenant: tenant}
	}
	st := owner.Statement{Tenant: tenant, Op: owner.OpSetOwner, OwnerKey: nk.Fingerprint(), Region: n.cfg.Region, RequestID: requestID}
	how := "krypton owner consent -key <current-owner.key> -op set-owner -owner-pub <new-owner.pub> -region " + shellWord(n.cfg.Region) +
		" -request-id <id> -out consent.jws " + tenant
	prev, err := n.checkConsent(ctx, consent, st, how, false)
	if err != nil {
		return fsm.Tenant{}, err
	}
	// The record (auditapply.go, written from the log on every node) names the new key and the
	// key whose consent was checked here.
	origin := n.origin(ctx)
	origin.Detail = map[string]string{"owner-key": nk.Fingerprint()}
	if prev == "" {
		origin.Detail["old-owner-key"] = "(none: registered on the operator's word)"
	} else {
		origin.Detail["old-owner-key"], origin.Detail["consented-by"] = prev, prev
	}
	res, err := n.applyAs(ctx, requestID, fsm.SetOwnerKey{Tenant: tenant, OwnerKey: pem, Consent: consent}, origin)
	if err != nil {
		return fsm.Tenant{}, err
	}
	return n.state.Tenant(res.Tenant)
}

func (s *adminService) SetOwnerKey(ctx context.Context, req *kv1.SetOwnerKeyRequest) (*kv1.Tenant, error) {
	if err := s.n.governedSetOwner(req.GetTenant()); err != nil {
		return nil, err
	}
	if err := transport.CheckRequestID(req.GetRequestId()); err != nil {
		return nil, err
	}
	t, err := s.n.SetOwnerKey(ctx, req.GetRequestId(), req.GetTenant(), req.GetOwnerPublicKey(), req.GetConsent())
	if err != nil {
		return nil, err
	}
	return s.n.tenantProto(t), nil
}

func (n *Node) governedSetOwner(tenant string) error {
	return n.governedWrite("register the owner key", govCommand{words: []string{"tenant", "set-owner"},
		flags: [][2]string{{"owner-pub", "<file>"}}, args: []string{nameOr(tenant, "<tenant>")}})
}

// checkRestoreKeepsOwnerKeys refuses a snapshot that would replace or drop the owner key of a
// tenant this node holds or has held (the durable owner keys, ownerset.go): otherwise an operator
// could restore a snapshot that gives the tenant a key of the operator's own (or none, and then
// register one on the operator's word), or one without the tenant and then one that brings it back
// so, and rekey the tenant with it. A snapshot taken before the owner's last handover is refused
// too; restore one taken after it.
func (n *Node) checkRestoreKeepsOwnerKeys(scratch *fsm.State) error {
	held := maps.Clone(n.revs.ownerKeys())
	if held == nil {
		held = map[string]string{}
	}
	for _, t := range n.state.ListTenants() {
		if _, fp, err := n.state.OwnerKey(t.Name); err == nil && fp != "" {
			held[t.Name] = fp
		}
	}
	var changed []string
	for tenant, fp := range held {
		if _, err := scratch.Tenant(tenant); err != nil {
			continue // not in the snapshot: nothing of it can be rekeyed
		}
		if _, sfp, _ := scratch.OwnerKey(tenant); sfp != fp {
			changed = append(changed, tenant)
		}
	}
	if len(changed) == 0 {
		return n.checkRestoreKeepsOwnerAnchors(scratch)
	}
	slices.Sort(changed)
	return transport.Coded(codes.FailedPrecondition, "region: the snapshot holds another owner key (or none) for tenant(s) "+strings.Join(changed, ", ")+
		" than this region; restoring it would replace the customer's owner key without its consent: restore a snapshot taken after the last owner key change")
}

// checkRestoreKeepsOwnerAnchors refuses a snapshot in which a tenant with an owner key (one this
// node holds, or has held: the durable record, ownerset.go) is on another anchor than this node
// last applied. A rekey of such a tenant took its owner's consent; a snapshot from before it would
// move the tenant back to the old anchor without one: to an anchor the operator may control, where
// the customer disabling the new anchor no longer stops the tenant. Two restores in a row (one
// without the tenant, then the old one) are refused the same way, by the durable anchors.
//
// Only the anchor URI is compared, not the sealed L2 versions: they are sealed by the anchor the
// URI names, so a snapshot with the same anchor gives no one a key they could not already use,
// and one taken before an L2 rotation is an ordinary backup.
//
// A snapshot from before a rekey also lacks its consent's used digest, so the consent could be
// applied again while valid. The anchor check refuses most such snapshots, but not one taken
// before a rekey and the rekey back (A to B to A): so a snapshot must also hold every used consent
// the current state records that may not have expired yet (checkRestoreKeepsConsents). This is
// checked against the current state only, not a durable record: a restore without the tenant
// first forgets them, but the dangerous restore (back to an anchor the tenant left) is still
// refused by the durable anchors, a replay then moves the tenant only to an anchor (or owner key)
// its owner consented to, and a consent is valid for minutes (owner.MaxTTL): not worth another
// record on disk.
func (n *Node) checkRestoreKeepsOwnerAnchors(scratch *fsm.State) error {
	held := maps.Clone(n.revs.ownerAnchors())
	if held == nil {
		held = map[string]string{}
	}
	for _, t := range n.state.ListTenants() {
		if _, fp, err := n.state.OwnerKey(t.Name); err == nil && fp != "" {
			held[t.Name] = anchorDigest(t.Anchor)
		}
	}
	var moved []string
	for tenant, digest := range held {
		st, err := scratch.Tenant(tenant)
		if err != nil {
			continue // not in the snapshot: nothing of it can be used
		}
		if anchorDigest(st.Anchor) != digest {
			moved = append(moved, tenant)
		}
	}
	if len(moved) == 0 {
		return n.checkRestoreKeepsConsents(scratch)
	}
	slices.Sort(moved)
	return transport.Coded(codes.FailedPrecondition, "region: the snapshot puts tenant(s) "+strings.Join(moved, ", ")+
		" on another anchor than this region, which its owner moved them from (a rekey with the owner's consent); restoring it would undo that without the owner's consent: "+
		"restore a snapshot taken after the rekey, or first rekey the tenant to the snapshot's anchor with the owner's consent (`krypton tenant rekey -consent`)")
}

// checkRestoreKeepsConsents refuses a snapshot that lacks a consent applied in this region's
// current state that may still be valid (checkRestoreKeepsOwnerAnchors says why), naming when the
// last of them expires.
func (n *Node) checkRestoreKeepsConsents(scratch *fsm.State) error {
	// A consent is refused once expired at the entry's time (the leader's clock, this node's
	// when it leads); owner.MaxSkew covers another node's leading with a slower clock.
	live := time.Now().Add(-owner.MaxSkew).Unix()
	var missing []string
	var until int64
	for _, t := range n.state.ListTenants() {
		if _, err := scratch.Tenant(t.Name); err != nil {
			continue // not in the snapshot: nothing of it can be used
		}
		kept := scratch.UsedConsents(t.Name)
		lacks := false
		for digest, exp := range n.state.UsedConsents(t.Name) {
			if _, ok := kept[digest]; !ok && exp > live {
				lacks = true
				until = max(until, exp)
			}
		}
		if lacks {
			missing = append(missing, t.Name)
		}
	}
	if len(missing) == 0 {
		return nil
	}
	slices.Sort(missing)
	return transport.Coded(codes.FailedPrecondition, "region: the snapshot lacks owner consent(s) tenant(s) "+strings.Join(missing, ", ")+
		" used since it was taken, which are still valid; restoring it would let them be used again: restore a snapshot taken after them, or wait until "+
		time.Unix(until, 0).Add(owner.MaxSkew).UTC().Format(time.RFC3339)+" when they have expired")
}

// ownerKeyText names an owner key in an audit record: its fingerprint, or that there is none.
func ownerKeyText(fp string) string {
	if fp == "" {
		return "(none)"
	}
	return fp
}
