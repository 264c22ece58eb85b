package kmip

import (
	"context"

	"github.com/kryptonkms/krypton/internal/pki"
)

// Keys is what the KMIP front end needs from the gateway core: data keys
// (L4) made and wrapped by the region under the calling service's L3, and
// wrapped blobs opened again. The front end stores only the wrapped blob; it
// asks for the plaintext each time a KMIP operation needs it and wipes its
// copy afterwards.
//
// owner is the verified identity of the KMIP client's certificate
// (KindService: tenant and service). An implementation must wrap and unwrap
// for that identity, or refuse: a gateway that acts for one identity only
// returns an error for any other. aad binds each blob to its KMIP object
// (tenant, service and unique identifier), so that a blob copied to another
// object does not open.
//
// Errors: one that wraps ErrKeyRefused, or a gRPC status with code
// PermissionDenied, FailedPrecondition or NotFound, is a definite refusal
// (revoked, locked out, not authorised) and reaches the client as Permission
// Denied; any other error is reported as a General Failure that may be
// retried.
type Keys interface {
	// GenerateDataKey returns a fresh 32-byte data key and its wrapped
	// blob. The caller wipes plaintext.
	GenerateDataKey(ctx context.Context, owner pki.Identity, aad []byte) (plaintext, wrapped []byte, err error)
	// WrapKey has the region wrap a 32-byte key the client supplied
	// (KMIP Register) under owner's service key, bound to aad, and returns
	// the blob, which Unwrap opens. It does not keep or wipe plaintext;
	// the caller wipes it.
	WrapKey(ctx context.Context, owner pki.Identity, plaintext, aad []byte) (wrapped []byte, err error)
	// Unwrap opens a blob made by GenerateDataKey or WrapKey for the same
	// owner and aad. The caller wipes the result.
	Unwrap(ctx context.Context, owner pki.Identity, wrapped, aad []byte) (plaintext []byte, err error)
}

// objectAAD is the additional data that binds a wrapped data key to its
// KMIP object. The label versions the format; the parts are NUL-separated,
// and none may contain NUL (names are checked by pki, identifiers are
// generated here).
func objectAAD(owner pki.Identity, id string) []byte {
	b := make([]byte, 0, 64)
	b = append(b, "krypton-kmip-object-v1"...)
	for _, s := range []string{owner.Tenant, owner.Service, id} {
		b = append(b, 0)
		b = append(b, s...)
	}
	return b
}
