package gcpkms

import (
	"context"
	"fmt"
	"regexp"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/anchor"
)

// stateRE finds the version state Cloud KMS names in a FAILED_PRECONDITION
// message ("projects/.../cryptoKeyVersions/1 is not enabled, current state
// is: DISABLED."). The state decides only which denial reason is reported;
// the code alone already makes it a denial.
var stateRE = regexp.MustCompile(`state is:? ([A-Z_]+)`)

// classify maps an error of the Cloud KMS client to the anchor error
// contract, by gRPC status code as documented for Encrypt and Decrypt:
//
//	FAILED_PRECONDITION  version not ENABLED          denied: disabled, pending deletion, destroyed, unusable
//	NOT_FOUND            no such key                  denied: key not found
//	PERMISSION_DENIED    IAM refuses (or no such key) denied: access denied
//	INVALID_ARGUMENT     Decrypt: does not decrypt    denied: invalid ciphertext
//	                     Encrypt: key cannot encrypt  denied: key unusable
//	OUT_OF_RANGE         as INVALID_ARGUMENT
//	UNIMPLEMENTED        operation not offered        denied: key unusable
//	UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, INTERNAL, ABORTED,
//	UNKNOWN, CANCELED, DATA_LOSS, UNAUTHENTICATED, any other, and errors
//	without a status (dialing, a done context)                    transient
//
// UNAUTHENTICATED is transient: it is about Krypton's own credentials (an
// expired token, a metadata server that did not answer), not the
// customer's "no", which Cloud KMS reports as PERMISSION_DENIED. A done
// caller context is always transient, whatever the status says.
func classify(ctx context.Context, op string, err error) error {
	rpc := "encrypt"
	if op == "unseal" {
		rpc = "decrypt"
	}
	wrapped := fmt.Errorf("gcpkms: %s: %w", rpc, err)
	if ctx.Err() != nil {
		return anchor.Transient(op, anchor.SchemeGCPKMS, wrapped)
	}
	st, ok := status.FromError(err)
	if !ok {
		return anchor.Transient(op, anchor.SchemeGCPKMS, wrapped)
	}
	deny := func(r anchor.DenialReason) error { return anchor.Deny(op, anchor.SchemeGCPKMS, r, wrapped) }
	switch st.Code() {
	case codes.FailedPrecondition:
		return deny(stateReason(st.Message()))
	case codes.NotFound:
		return deny(anchor.ReasonKeyNotFound)
	case codes.PermissionDenied:
		return deny(anchor.ReasonAccessDenied)
	case codes.InvalidArgument, codes.OutOfRange:
		if op == "unseal" {
			return deny(anchor.ReasonInvalidCiphertext)
		}
		return deny(anchor.ReasonKeyUnusable)
	case codes.Unimplemented:
		return deny(anchor.ReasonKeyUnusable)
	}
	return anchor.Transient(op, anchor.SchemeGCPKMS, wrapped)
}

// stateReason returns the denial reason for the version state a
// FAILED_PRECONDITION message names.
func stateReason(msg string) anchor.DenialReason {
	m := stateRE.FindStringSubmatch(msg)
	if m == nil {
		return anchor.ReasonKeyUnusable
	}
	switch m[1] {
	case "DISABLED":
		return anchor.ReasonDisabled
	case "DESTROY_SCHEDULED":
		return anchor.ReasonPendingDeletion
	case "DESTROYED":
		return anchor.ReasonDestroyed
	}
	// PENDING_GENERATION, PENDING_IMPORT, IMPORT_FAILED, GENERATION_FAILED,
	// PENDING_EXTERNAL_DESTRUCTION, EXTERNAL_DESTRUCTION_FAILED.
	return anchor.ReasonKeyUnusable
}
