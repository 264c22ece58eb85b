package gcpkms

import (
	"context"
	"errors"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/anchor"
)

func TestClassify(t *testing.T) {
	const v = "projects/p/locations/l/keyRings/r/cryptoKeys/DISABLED/cryptoKeyVersions/1"
	transient := anchor.ErrUnavailable
	for _, c := range []struct {
		op   string
		err  error
		want error // a sentinel: a DenialReason's, or ErrUnavailable
	}{
		{"seal", status.Error(codes.FailedPrecondition, v+" is not enabled, current state is: DISABLED."), anchor.ErrDisabled},
		{"unseal", status.Error(codes.FailedPrecondition, v+" is not enabled, current state is: DESTROY_SCHEDULED."), anchor.ErrPendingDeletion},
		{"unseal", status.Error(codes.FailedPrecondition, v+" is not enabled, current state is: DESTROYED."), anchor.ErrDestroyed},
		{"seal", status.Error(codes.FailedPrecondition, v+" is not enabled, current state is: PENDING_IMPORT."), anchor.ErrKeyUnusable},
		// The key's name says DISABLED; only the state counts.
		{"seal", status.Error(codes.FailedPrecondition, v+" has no primary version."), anchor.ErrKeyUnusable},
		{"seal", status.Error(codes.NotFound, "not found"), anchor.ErrKeyNotFound},
		{"unseal", status.Error(codes.NotFound, "not found"), anchor.ErrKeyNotFound},
		{"seal", status.Error(codes.PermissionDenied, "Permission denied"), anchor.ErrAccessDenied},
		{"unseal", status.Error(codes.PermissionDenied, "Permission denied"), anchor.ErrAccessDenied},
		{"unseal", status.Error(codes.InvalidArgument, "Decryption failed: the ciphertext is invalid."), anchor.ErrInvalidCiphertext},
		{"unseal", status.Error(codes.OutOfRange, "x"), anchor.ErrInvalidCiphertext},
		{"seal", status.Error(codes.InvalidArgument, "purpose"), anchor.ErrKeyUnusable},
		{"seal", status.Error(codes.Unimplemented, "x"), anchor.ErrKeyUnusable},
		{"seal", status.Error(codes.Unavailable, "x"), transient},
		{"unseal", status.Error(codes.DeadlineExceeded, "x"), transient},
		{"seal", status.Error(codes.ResourceExhausted, "quota"), transient},
		{"unseal", status.Error(codes.Internal, "x"), transient},
		{"seal", status.Error(codes.Aborted, "x"), transient},
		{"seal", status.Error(codes.Unknown, "x"), transient},
		{"seal", status.Error(codes.Canceled, "x"), transient},
		{"seal", status.Error(codes.DataLoss, "x"), transient},
		{"seal", status.Error(codes.Unauthenticated, "token expired"), transient},
		{"seal", status.Error(codes.AlreadyExists, "x"), transient},
		{"unseal", errors.New("dial tcp: connection refused"), transient},
		{"seal", context.DeadlineExceeded, transient},
	} {
		got := classify(context.Background(), c.op, c.err)
		if !errors.Is(got, c.want) {
			t.Errorf("%s %v: got %v, want %v", c.op, c.err, got, c.want)
		}
		if anchor.IsDenied(got) == (c.want == transient) || anchor.IsTransient(got) != (c.want == transient) {
			t.Errorf("%s %v: got %v: denied %v, transient %v", c.op, c.err, got, anchor.IsDenied(got), anchor.IsTransient(got))
		}
		if !strings.Contains(got.Error(), "gcpkms: ") || !errors.Is(got, c.err) {
			t.Errorf("%s %v: got %v, which does not wrap the client's error", c.op, c.err, got)
		}
	}
	// A done caller context is transient, whatever the service said.
	done, cancel := context.WithCancel(context.Background())
	cancel()
	got := classify(done, "unseal", status.Error(codes.PermissionDenied, "x"))
	if !anchor.IsTransient(got) || anchor.IsDenied(got) {
		t.Errorf("done context: %v, want transient", got)
	}
}
