// Package anchor is Krypton's L1 contract: a customer root key held by a
// KMS or HSM (AWS KMS, Google Cloud KMS, Azure Key Vault, a PKCS#11
// token), or by a file in development, that seals and unseals tenant keys
// (L2) and can be asked whether it is still usable.
//
// A Provider is opened from an anchor URI:
//
//	awskms://arn:aws:kms:eu-west-1:111122223333:key/<id>   (or alias/NAME?region=R)
//	gcpkms://projects/P/locations/L/keyRings/R/cryptoKeys/K
//	azurekv://VAULT.vault.azure.net/keys/NAME[/VERSION]
//	pkcs11:token=T;object=O?module-path=/usr/lib/x.so&pin-source=file:/etc/pin
//	file:///var/lib/krypton/dev/root.key                       (development only)
//
// Parse validates all five without contacting anything; Open needs the
// provider's package linked in, which registers its scheme from init:
//
//	import _ "github.com/kryptonkms/krypton/anchor/file"
//
//	p, err := anchor.Open(ctx, uri, anchor.Options{Logger: log})
//	if err != nil {
//		return err
//	}
//	defer p.Close()
//	ac := anchor.Context{Region: "eu-west-1", Tenant: "acme", Version: 1}
//	sealed, err := p.Seal(ctx, l2Bytes, ac)
//	...
//	l2Bytes, err = p.Unseal(ctx, sealed, ac)
//
// Seal binds its blob to a Context (region, tenant, L2 version): Unseal
// under another Context is denied as ErrInvalidCiphertext.
//
// Errors tell a definite denial from a transient failure, because the
// kill switch acts on the first and rides out the second:
//
//	switch err := p.Check(ctx); {
//	case err == nil:
//	case anchor.IsDenied(err): // disabled, deleted, destroyed, access revoked: lock the tenant out now
//	case anchor.IsTransient(err): // timeout, throttling, 5xx: retry, lock out after a grace period
//	}
//
// Retry retries transient failures only. SealTenantKey and
// UnsealTenantKey seal a wrap.TenantKey, wiping the plaintext copies they
// make. The package anchortest is the conformance suite every provider
// passes; DESIGN.md explains the choices.
package anchor
