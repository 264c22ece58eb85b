package fsm

import (
	"unicode/utf8"
)

// Origin says who made the proposer propose an entry: it travels in the log entry so that every
// node that applies the entry can audit it with its caller (docs/audit.md, "Replicated records").
// It never changes the state and is not part of what a request id names (requestDigest): a retry
// of the same request through another node or under another leader is still the same request.
//
// Nothing in it may be key material: every value ends up in every node's audit log.
type Origin struct {
	// Kind is where the command came from: OriginAPI, OriginFeed, OriginPeer or OriginNode.
	Kind string `json:"kind"`
	// Actor is the caller's identity: a certificate's SPIFFE URI, an OIDC "oidc:<issuer>#<sub>",
	// "governance" for the feed, "node" for the node's own decisions.
	Actor string `json:"actor,omitempty"`
	// Node is the id of the node that proposed the entry.
	Node string `json:"node,omitempty"`
	// Detail holds short strings the proposer knew and the audit record should carry (a redacted
	// anchor, an owner key's fingerprint, the governance node that served an event). At most
	// MaxOriginDetail keys, each value at most MaxOriginValue bytes.
	Detail map[string]string `json:"detail,omitempty"`
}

// Origin kinds.
const (
	OriginAPI  = "api"             // a call of a node's API
	OriginFeed = "governance-feed" // an event of governance's feed
	OriginPeer = "peer"            // another node of the region
	OriginNode = "node"            // the node's own decision (an L1 check's lockout)
)

// Limits on an Origin, so that an oversized one is refused before the log (Validate) and the
// audit record made from it is never refused (audit.MaxDetailValue is 1 KiB).
const (
	MaxOriginDetail = 16
	MaxOriginValue  = 512
)

func checkOrigin(o Origin) error {
	switch o.Kind {
	case "", OriginAPI, OriginFeed, OriginPeer, OriginNode:
	default:
		return invalid(ErrInvalidCommand, "origin")
	}
	if !shortText(o.Actor) || !shortText(o.Node) || len(o.Detail) > MaxOriginDetail {
		return invalid(ErrInvalidCommand, "origin")
	}
	for k, v := range o.Detail {
		if k == "" || !shortText(k) || !shortText(v) {
			return invalid(ErrInvalidCommand, "origin")
		}
	}
	return nil
}

func shortText(s string) bool {
	return len(s) <= MaxOriginValue && utf8.ValidString(s)
}

// Applied is one log entry as a node applied it, for Options.OnApplied.
type Applied struct {
	Index  uint64
	Entry  Entry
	Result Result // Result.Index is Index when Err is nil
	Err    error  // the state machine's refusal: nothing changed
	// OldAnchor is the tenant's anchor before a SetAnchor (its own or a governance event's)
	// applied, "" if there was none (the kill switch was on).
	OldAnchor string
}

// Changed reports whether the entry changed the state: it was not refused, not a retry of an
// applied request id, and not a governance event at or below the cursor.
func (a Applied) Changed() bool {
	return a.Err == nil && !a.Result.Duplicate && !a.Result.Skipped
}
