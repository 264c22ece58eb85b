package gateway

import (
	"context"

	"github.com/kryptonkms/krypton/wrap"
)

// XKSKeys adapts a Gateway to the XKS proxy front end's Keys interface (package gateway/xks):
// external keys are data keys made at the edge and wrapped by the region under the gateway's own
// service key, opened through the same batching, failover and revocation-coherent cache as every
// other front end. The proxy keeps no unwrapped key between requests, so Krypton's revocation
// reaches AWS KMS as soon as it reaches the gateway.
type XKSKeys struct{ G *Gateway }

// NewKey makes a data key bound to aad and returns only its blob; the plaintext is wiped.
func (k XKSKeys) NewKey(ctx context.Context, aad []byte) ([]byte, error) {
	pt, blob, _, err := k.G.GenerateDataKey(ctx, wrap.KeyID{}, aad)
	clear(pt)
	return blob, err
}

// Unwrap opens a blob made by NewKey with aad.
func (k XKSKeys) Unwrap(ctx context.Context, blob, aad []byte) ([]byte, error) {
	pt, _, err := k.G.Unwrap(ctx, blob, aad)
	return pt, err
}
