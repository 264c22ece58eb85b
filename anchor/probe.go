package anchor

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
)

// ProbeContext is the Context of Probe's round trip. Probe blobs are
// thrown away at once, so sharing a name with a real region or tenant
// does no harm.
var ProbeContext = Context{Region: "krypton-probe", Tenant: "krypton-probe", Version: 1}

// Probe seals 32 random bytes under ProbeContext and unseals them: a
// Check for providers whose API has no cheap status call, or whose
// customer grant may not include it (AWS kms:DescribeKey is a separate
// permission; a Check that needs it would lock out a tenant whose grant
// allows exactly Encrypt and Decrypt). It exercises exactly the
// permissions Krypton uses.
//
//	func (p *Provider) Check(ctx context.Context) error { return anchor.Probe(ctx, p) }
//
// Errors: those of Seal and Unseal; an error if the round trip returns
// other bytes (a broken provider, never a denial).
func Probe(ctx context.Context, p Provider) error {
	var pt [32]byte
	rand.Read(pt[:])
	sealed, err := p.Seal(ctx, pt[:], ProbeContext)
	if err != nil {
		return err
	}
	got, err := p.Unseal(ctx, sealed, ProbeContext)
	if err != nil {
		return err
	}
	defer clear(got)
	if !bytes.Equal(got, pt[:]) {
		return errors.New("anchor: probe round trip returned other bytes")
	}
	return nil
}
