package govfsm

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
)

// Op names a state-machine command.
type Op string

// Commands of the governance state machine. The names use the lifecycle verbs of the API's RPCs and
// of the region's fsm commands (LockTenant, UnlockTenant, ResyncTenant, SetOwnerKey); the values
// are what the Raft log holds and never change.
const (
	OpCreateTenant  Op = "create-tenant"
	OpCreateService Op = "create-service"
	OpSetAnchor     Op = "set-anchor"
	OpDeleteAnchor  Op = "delete-anchor"
	OpSetPolicy     Op = "set-policy"
	OpRevoke        Op = "revoke"
	OpLockTenant    Op = "lock"
	OpUnlockTenant  Op = "unlock"
	OpReport        Op = "report"
	OpResyncTenant  Op = "resync"
	OpSetOwnerKey   Op = "set-owner"
	// OpResetVoters forgets a region's Raft configuration learned from its reports
	// (ResetRegionVoters): the next report teaches it again.
	OpResetVoters Op = "reset-voters"
	// OpCompact drops the events every region that pins the log has applied and that no longer
	// define the state (compact.go); the leader proposes it (governance's compactor).
	OpCompact Op = "compact"
	// OpSetQuota sets a tenant's (Service empty) or a service's quota (Quota; nil removes it).
	OpSetQuota Op = "set-quota"
	// OpSetRegions replaces a shared tenant's region set (Regions).
	OpSetRegions Op = "set-regions"
	// OpPublishKeys stores the sealed hierarchy (Keys) the tenant's home region (Region)
	// published, and emits what is new in a TENANT_KEYS event.
	OpPublishKeys Op = "publish-keys"
)

// Command is one entry of the governance Raft log. The proposing node fills in everything that is
// not deterministic (Time, EventID) before it proposes, so that Apply is a pure function of the
// state and the command.
//
// Commands are JSON: small, self-describing, and readable in a log dump. encoding/json is the one
// decoder; FuzzDecodeCommand exercises it.
type Command struct {
	Op Op `json:"op"`
	// RequestID makes a write idempotent; Fingerprint is a digest of the request's parameters, so
	// that a reused id with other parameters is refused. Both empty for OpReport.
	RequestID   string `json:"rid,omitempty"`
	Fingerprint string `json:"fp,omitempty"`
	// EventID is the id of the event this command emits, if it emits one.
	EventID string `json:"eid,omitempty"`
	// Time is the proposing node's clock (Unix ns).
	Time int64 `json:"time"`
	// Actor is the caller's identity (a certificate's SPIFFE URI, an OIDC subject) and Proposer the
	// node that proposed the command, for every node's audit record of it (Node.auditApplied). The
	// proposer sets both after the fingerprint: they never make a retry another request. At most
	// MaxActor bytes each.
	Actor    string `json:"actor,omitempty"`
	Proposer string `json:"proposer,omitempty"`

	Tenant    string   `json:"tenant,omitempty"`
	Service   string   `json:"service,omitempty"`
	Version   uint32   `json:"version,omitempty"`
	AnchorURI string   `json:"anchor,omitempty"`
	Regions   []string `json:"regions,omitempty"`
	Reason    string   `json:"reason,omitempty"`
	// OwnerKey is a tenant owner public key (PKIX PEM): create-tenant, set-owner. Consent is the
	// owner's consent (a compact JWS, package internal/owner): set-anchor, set-owner, set-regions.
	OwnerKey string `json:"owner-key,omitempty"`
	Consent  string `json:"consent,omitempty"`

	Quota *Quota `json:"quota,omitempty"`

	// Home: create-tenant of a shared tenant. Keys: publish-keys.
	Home string      `json:"home,omitempty"`
	Keys *TenantKeys `json:"keys,omitempty"`
	// RegionAnchors: create-tenant's per-region anchors (region -> URI). Region, for set-anchor:
	// set only that region's pointer.
	RegionAnchors map[string]string `json:"region-anchors,omitempty"`
	// Floor: publish-keys from a region other than the home of a tenant made shared.
	Floor *Floor `json:"floor,omitempty"`
	// OwnerRule: set-regions proposed by a release that asks the tenant owner's consent (Consent)
	// for a region added or a home set (setRegions). Absent in entries from before, which replay as
	// they applied.
	OwnerRule bool `json:"owner-rule,omitempty"`

	Rules            []Rule `json:"rules,omitempty"`
	ExpectedRevision uint64 `json:"expect,omitempty"`

	Region       string   `json:"region,omitempty"`
	Cursor       uint64   `json:"cursor,omitempty"`
	Inventory    []KeyRef `json:"inv,omitempty"`
	HasInventory bool     `json:"has-inv,omitempty"`
	// OpReport: the reporting node (from its verified certificate, never from the request), and the
	// region's Raft configuration it reported (index of its latest configuration entry, its voters
	// sorted); ConfigIndex 0 reports none. CommitIndex is the node's Raft commit index, which
	// ConfigIndex may not exceed (ValidReportConfig).
	Node        string   `json:"node,omitempty"`
	ConfigIndex uint64   `json:"cfg-index,omitempty"`
	Voters      []string `json:"voters,omitempty"`
	CommitIndex uint64   `json:"commit,omitempty"`
	// OpCompact: Cursor is the highest floor the proposer asks for, Retention (ns) how long after
	// its last report a region still pins the floor.
	Retention int64 `json:"retention,omitempty"`
}

// MaxActor bounds Command.Actor and Command.Proposer, so that an audit record made from them is
// never refused (audit.MaxDetailValue is 1 KiB).
const MaxActor = 512

// MaxCommandSize bounds an encoded command (a full policy or a full inventory fits well within it).
const MaxCommandSize = 16 << 20

// Encode returns the command's log bytes.
func (c *Command) Encode() ([]byte, error) {
	b, err := json.Marshal(c)
	if err != nil {
		return nil, fmt.Errorf("governance: encode command: %w", err)
	}
	if len(b) > MaxCommandSize {
		return nil, ErrLimit
	}
	return b, nil
}

var errBadCommand = errors.New("governance: malformed command")

// DecodeCommand parses a command's log bytes. It refuses unknown fields, trailing data and
// oversized input; it does not check the command's meaning (Apply does).
func DecodeCommand(b []byte) (*Command, error) {
	if len(b) > MaxCommandSize {
		return nil, errBadCommand
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var c Command
	if err := dec.Decode(&c); err != nil {
		return nil, fmt.Errorf("%w: %v", errBadCommand, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data", errBadCommand)
	}
	switch c.Op {
	case OpCreateTenant, OpCreateService, OpSetAnchor, OpDeleteAnchor, OpSetPolicy, OpRevoke, OpLockTenant, OpUnlockTenant, OpReport, OpResyncTenant, OpSetOwnerKey, OpResetVoters, OpCompact, OpSetQuota, OpSetRegions, OpPublishKeys:
	default:
		return nil, fmt.Errorf("%w: unknown op", errBadCommand)
	}
	return &c, nil
}

// Result is what Apply returns for a command: the event it emitted (or, for a retried request, the
// original one), and the resulting state of what it changed. Err is one of this package's
// sentinels.
type Result struct {
	Err      error
	Event    *Event
	Tenant   *Tenant
	Service  *Service
	Policy   *Policy
	Recorded uint64 // OpReport: the cursor recorded for the region; OpCompact: the floor
	// OpSetAnchor, OpSetOwnerKey, OpResetVoters: what the change replaced (the anchor URI, empty
	// if it was deleted; the owner key's fingerprint; "<configuration index> <voters>"), for the
	// audit log; OpSetRegions: the fingerprint of the owner key that consented, if one did. Empty
	// for a retried request.
	Previous string
	// Retry is set for a retried request id: nothing changed now.
	Retry bool
}

// resultWire is Result on the wire between a leader and a follower that forwarded the command.
type resultWire struct {
	Err      string   `json:"err,omitempty"`
	Event    *Event   `json:"event,omitempty"`
	Tenant   *Tenant  `json:"tenant,omitempty"`
	Service  *Service `json:"service,omitempty"`
	Policy   *Policy  `json:"policy,omitempty"`
	Recorded uint64   `json:"recorded,omitempty"`
	Previous string   `json:"previous,omitempty"`
	Retry    bool     `json:"retry,omitempty"`
}

// Codec is the cluster.ResponseCodec of the governance state machine: it carries a Result across a
// forwarded Apply, its error as the sentinel's key (never a message to be parsed).
type Codec struct{}

// EncodeResponse implements cluster.ResponseCodec.
func (Codec) EncodeResponse(resp any) ([]byte, error) {
	r, ok := resp.(*Result)
	if !ok {
		return nil, fmt.Errorf("governance: cannot encode a %T response", resp)
	}
	w := resultWire{Event: r.Event, Tenant: r.Tenant, Service: r.Service, Policy: r.Policy, Recorded: r.Recorded, Previous: r.Previous, Retry: r.Retry}
	if r.Err != nil {
		var e *Error
		if !errors.As(r.Err, &e) {
			return nil, fmt.Errorf("governance: cannot encode error %T", r.Err)
		}
		w.Err = e.key
	}
	return json.Marshal(w)
}

// DecodeResponse implements cluster.ResponseCodec.
func (Codec) DecodeResponse(data []byte) (any, error) {
	var w resultWire
	if err := json.Unmarshal(data, &w); err != nil {
		return nil, fmt.Errorf("governance: decode response: %w", err)
	}
	r := &Result{Event: w.Event, Tenant: w.Tenant, Service: w.Service, Policy: w.Policy, Recorded: w.Recorded, Previous: w.Previous, Retry: w.Retry}
	if w.Err != "" {
		e, ok := errorsByKey[w.Err]
		if !ok {
			return nil, fmt.Errorf("governance: unknown error key in response")
		}
		r.Err = e
	}
	return r, nil
}
