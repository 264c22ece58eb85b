package gateway

import (
	"context"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
	"github.com/kryptonkms/krypton/wrap"
)

// KMIPKeys adapts a Gateway to the KMIP front end's Keys interface (package gateway/kmip): data
// keys made at the edge and wrapped by the region under the gateway's own service key, through
// the same batching, failover and cache as the gRPC front end. The gateway acts for one identity
// only, so a KMIP client whose certificate names another tenant or service is refused.
type KMIPKeys struct{ G *Gateway }

var errOtherIdentity = status.Error(codes.PermissionDenied, "gateway: this gateway acts for another tenant or service")

func (k KMIPKeys) check(owner pki.Identity) error {
	id := k.G.Identity()
	if owner.Kind != pki.KindService || owner.Tenant != id.Tenant || owner.Service != id.Service {
		return errOtherIdentity
	}
	return nil
}

// GenerateDataKey makes a data key for owner, bound to aad.
func (k KMIPKeys) GenerateDataKey(ctx context.Context, owner pki.Identity, aad []byte) (plaintext, wrapped []byte, err error) {
	if err := k.check(owner); err != nil {
		return nil, nil, err
	}
	pt, blob, _, err := k.G.GenerateDataKey(ctx, wrap.KeyID{}, aad)
	return pt, blob, err
}

// WrapKey has the region wrap a key a KMIP client supplied (Register) under the gateway's own
// service key, bound to aad, through the same batching and failover as GenerateDataKey. The
// caller keeps and wipes plaintext; the request gets its own copy, which sendWraps wipes.
func (k KMIPKeys) WrapKey(ctx context.Context, owner pki.Identity, plaintext, aad []byte) ([]byte, error) {
	if err := k.check(owner); err != nil {
		return nil, err
	}
	g := k.G
	if g.isClosed() {
		return nil, errShutdown
	}
	key, err := g.resolve(wrap.KeyID{})
	if err != nil {
		return nil, err
	}
	if len(plaintext) != wrap.KeySize {
		return nil, status.Errorf(codes.InvalidArgument, "gateway: a data key is %d bytes", wrap.KeySize)
	}
	if err := transport.CheckContext(aad); err != nil {
		return nil, err
	}
	sent := append([]byte(nil), plaintext...)
	resp, err := g.wraps.do(ctx, &kv1.WrapRequest{Key: keyRef(key), Plaintext: sent, Context: aad})
	if err != nil {
		return nil, err
	}
	return resp.GetBlob(), nil
}

// Unwrap opens a blob made by GenerateDataKey or WrapKey for owner and aad.
func (k KMIPKeys) Unwrap(ctx context.Context, owner pki.Identity, wrapped, aad []byte) ([]byte, error) {
	if err := k.check(owner); err != nil {
		return nil, err
	}
	pt, _, err := k.G.Unwrap(ctx, wrapped, aad)
	return pt, err
}
