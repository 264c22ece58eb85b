package staterr_test

import (
	"errors"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/fsm"
	"github.com/kryptonkms/krypton/governance/govfsm"
	"github.com/kryptonkms/krypton/internal/staterr"
	"github.com/kryptonkms/krypton/transport"
)

// shared lists every shared error with the sentinel of each state machine and the wire key both
// send between nodes, written out by hand so that a changed key fails here.
var shared = []struct {
	err       *staterr.Error
	region    error
	gov       error
	key       string
	wantCode  codes.Code
	regionMsg string
	govMsg    string
}{
	{staterr.ErrTenantNotFound, fsm.ErrTenantNotFound, govfsm.ErrTenantNotFound, "tenant-not-found", codes.NotFound,
		"fsm: tenant not found", "governance: tenant not found"},
	{staterr.ErrTenantExists, fsm.ErrTenantExists, govfsm.ErrTenantExists, "tenant-exists", codes.AlreadyExists,
		"fsm: tenant exists", "governance: tenant exists"},
	{staterr.ErrServiceNotFound, fsm.ErrServiceNotFound, govfsm.ErrServiceNotFound, "service-not-found", codes.NotFound,
		"fsm: service not found", "governance: service not found"},
	{staterr.ErrServiceExists, fsm.ErrServiceExists, govfsm.ErrServiceExists, "service-exists", codes.AlreadyExists,
		"fsm: service exists", "governance: service exists"},
	{staterr.ErrRevoked, fsm.ErrRevoked, govfsm.ErrRevoked, "revoked", codes.FailedPrecondition,
		"fsm: revoked", "governance: tenant is revoked"},
	{staterr.ErrInvalidCommand, fsm.ErrInvalidCommand, govfsm.ErrInvalidCommand, "invalid-command", codes.InvalidArgument,
		"fsm: invalid command", "governance: invalid command"},
	{staterr.ErrRequestIDReused, fsm.ErrRequestIDReused, govfsm.ErrRequestIDReused, "request-id-reused", codes.InvalidArgument,
		"fsm: request id reused for a different command", "governance: request_id reused for a different request"},
	{staterr.ErrConsentDenied, fsm.ErrConsentDenied, govfsm.ErrConsentDenied, "consent-denied", codes.PermissionDenied,
		"fsm: the tenant owner's consent does not allow this change; the owner makes one with `krypton owner consent`",
		"governance: the tenant owner's consent does not allow this change; the owner makes one with `krypton owner consent`"},
	{staterr.ErrConsentUsed, fsm.ErrConsentUsed, govfsm.ErrConsentUsed, "consent-used", codes.PermissionDenied,
		"fsm: this consent was already used; the owner makes a new one with `krypton owner consent`",
		"governance: this consent was already used; the owner makes a new one with `krypton owner consent`"},
}

// TestSharedErrorsAreOne: each shared error is recognised alike (errors.Is) from the region's and
// governance's state machine, maps to the same gRPC code with each plane's own message, and
// travels between nodes of either plane under the same key.
func TestSharedErrorsAreOne(t *testing.T) {
	listed := map[*staterr.Error]bool{}
	for _, c := range shared {
		listed[c.err] = true
		t.Run(c.key, func(t *testing.T) {
			if c.err.Key() != c.key {
				t.Errorf("key = %q, want %q", c.err.Key(), c.key)
			}
			// Recognised alike, and each plane's own sentinel stays its own.
			if !errors.Is(c.region, c.err) || !errors.Is(c.gov, c.err) {
				t.Errorf("errors.Is: region %v, governance %v; want both", errors.Is(c.region, c.err), errors.Is(c.gov, c.err))
			}
			if errors.Is(c.region, c.gov) || errors.Is(c.gov, c.region) {
				t.Error("one plane's sentinel matches the other's")
			}
			regionErr := &fsm.Error{Err: c.region, Tenant: "acme"}
			if !errors.Is(regionErr, c.err) || !errors.Is(regionErr, c.region) {
				t.Error("an fsm.Error does not match its sentinel and the shared error")
			}
			if c.region.Error() != c.regionMsg || c.gov.Error() != c.govMsg {
				t.Errorf("texts %q, %q; want %q, %q", c.region, c.gov, c.regionMsg, c.govMsg)
			}

			// The same code on the wire, each plane's text.
			rs := status.Convert(transport.ToStatus(regionErr))
			gs := status.Convert(transport.ToStatus(c.gov))
			if rs.Code() != c.wantCode || gs.Code() != c.wantCode {
				t.Errorf("codes: region %v, governance %v; want %v", rs.Code(), gs.Code(), c.wantCode)
			}
			if rs.Message() != c.regionMsg+` (tenant "acme")` || gs.Message() != c.govMsg {
				t.Errorf("messages: region %q, governance %q", rs.Message(), gs.Message())
			}

			// The same key between nodes of each plane, decoding to the same sentinel.
			b, err := fsm.EncodeResponse(regionErr)
			if err != nil || !strings.Contains(string(b), `"code":"`+c.key+`"`) {
				t.Errorf("fsm encodes %s, %v", b, err)
			}
			if v, err := fsm.DecodeResponse(b); err != nil || !errors.Is(v.(error), c.region) || !errors.Is(v.(error), c.err) {
				t.Errorf("fsm decodes %v, %v", v, err)
			}
			b, err = govfsm.Codec{}.EncodeResponse(&govfsm.Result{Err: c.gov})
			if err != nil || !strings.Contains(string(b), `"`+c.key+`"`) {
				t.Errorf("govfsm encodes %s, %v", b, err)
			}
			if v, err := (govfsm.Codec{}).DecodeResponse(b); err != nil || v.(*govfsm.Result).Err != c.gov || !errors.Is(v.(*govfsm.Result).Err, c.err) {
				t.Errorf("govfsm decodes %v, %v", v, err)
			}
		})
	}
	for _, e := range staterr.All() {
		if !listed[e] {
			t.Errorf("shared error %q is not tested here", e)
		}
	}
}

// TestKeysUnique: a key names one shared error.
func TestKeysUnique(t *testing.T) {
	seen := map[string]bool{}
	for _, e := range staterr.All() {
		if e.Key() == "" || seen[e.Key()] {
			t.Errorf("bad shared error %q (key %q)", e, e.Key())
		}
		seen[e.Key()] = true
	}
}
