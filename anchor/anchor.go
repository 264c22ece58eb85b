package anchor

import (
	"context"
	"encoding/binary"
	"fmt"
	"strconv"

	"github.com/kryptonkms/krypton/wrap"
)

// Size limits every provider enforces, so that all four clouds and the HSM
// accept the same inputs. An L1 seals 32-byte tenant keys; 64 bytes leaves
// room for a provider that seals a key together with a digest of its
// Context (Azure wrapkey has no AAD) and still fits RSA-OAEP-256 under a
// 2048-bit key (190 bytes).
const (
	// MaxPlaintextSize is the largest plaintext Seal accepts, in bytes.
	MaxPlaintextSize = 64

	// MaxSealedSize is the largest blob Unseal looks at, in bytes. Larger
	// blobs are refused as ErrInvalidCiphertext without calling the
	// provider. AWS KMS ciphertext blobs for 64 bytes are under 300 bytes,
	// an RSA-4096 wrap is 512; 8 KiB is generous.
	MaxSealedSize = 8192
)

// A Provider is an L1 anchor: a customer root key that never leaves its
// KMS or HSM, asked to seal and unseal tenant keys (L2).
//
// Implementations are safe for concurrent use. Every method's error is a
// *DeniedError (the provider definitely refuses), a *TransientError (try
// again later), or one of ErrClosed, ErrPlaintextSize, ErrInvalidContext
// (the caller's mistake). The package anchortest checks this contract.
type Provider interface {
	// Seal encrypts plaintext (1 to MaxPlaintextSize bytes) under the L1 key,
	// bound to ac: Unseal with any other Context fails. Two calls with the
	// same input return different blobs. Seal does not keep or modify
	// plaintext.
	//
	// Errors: ErrPlaintextSize, ErrInvalidContext, ErrClosed; a *DeniedError
	// (disabled, pending deletion, destroyed, not found, access denied,
	// unusable); a *TransientError.
	Seal(ctx context.Context, plaintext []byte, ac Context) ([]byte, error)

	// Unseal decrypts a blob made by Seal under the same key and Context.
	// The caller owns the returned plaintext and should wipe it (clear)
	// when done.
	//
	// Errors: as Seal, and a *DeniedError with ReasonInvalidCiphertext when
	// the blob is tampered, truncated, sealed under another key or another
	// Context. Unseal never panics on any input.
	Unseal(ctx context.Context, sealed []byte, ac Context) ([]byte, error)

	// Check reports whether the L1 key is usable now: nil, a *DeniedError
	// (the kill switch: the region leader locks the tenant out) or a
	// *TransientError (tolerated for a grace period). It is cheap enough to
	// call every few seconds; providers that have no status call do a
	// round trip of a fixed probe.
	Check(ctx context.Context) error

	// Describe says what the provider is, for logs and the admin API. It
	// never contains a secret (no PIN, no credentials) and works after
	// Close.
	Describe() Description

	// Close releases the provider's resources (connections, HSM sessions).
	// It may be called more than once and always returns nil after the
	// first call; every other method returns ErrClosed after it.
	Close() error
}

// A Description names a provider's key without secrets.
type Description struct {
	// Scheme is the URI scheme: "awskms", "gcpkms", "azurekv", "pkcs11"
	// or "file".
	Scheme string

	// Key names the L1 key in the provider's own terms: an ARN, a GCP
	// resource name, "vault-host/keys/name[/version]", "token/object", a
	// file path.
	Key string

	// URI is the anchor URI with secrets (pin-value) redacted.
	URI string

	// Development is true for anchors that are not fit for production
	// (file://). Servers refuse them unless started in development mode.
	Development bool
}

// A Context is what a sealed tenant key (L2) is bound to: the region that
// holds it, its tenant and its version. A blob sealed under one Context
// never opens under another, so a region cannot be handed another
// region's, tenant's or version's blob.
type Context struct {
	Region  string // region name, as wrap.ValidateName
	Tenant  string // tenant name, as wrap.ValidateName
	Version uint32 // L2 version, at least 1
}

// Validate reports whether every field of c is set and well formed. The
// error wraps ErrInvalidContext.
func (c Context) Validate() error {
	if err := wrap.ValidateName(c.Region); err != nil {
		return fmt.Errorf("%w: region: %w", ErrInvalidContext, err)
	}
	if err := wrap.ValidateName(c.Tenant); err != nil {
		return fmt.Errorf("%w: tenant: %w", ErrInvalidContext, err)
	}
	if c.Version == 0 {
		return fmt.Errorf("%w: version 0", ErrInvalidContext)
	}
	return nil
}

// aadLabel starts every encoded Context. It separates this use of the L1
// key from any other the customer may make of it, and versions the
// encoding.
const aadLabel = "krypton anchor L2 context v1\x00"

// AAD returns the canonical byte encoding of c, for providers that take
// additional authenticated data (GCP, PKCS#11 GCM, the file anchor):
//
//	"krypton anchor L2 context v1" 0x00
//	len(Region) uint16 BE, Region
//	len(Tenant) uint16 BE, Tenant
//	Version uint32 BE
//
// The length prefixes make it unambiguous: no two Contexts encode alike.
// Call it on a validated Context.
func (c Context) AAD() []byte {
	b := make([]byte, 0, len(aadLabel)+2+len(c.Region)+2+len(c.Tenant)+4)
	b = append(b, aadLabel...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(c.Region)))
	b = append(b, c.Region...)
	b = binary.BigEndian.AppendUint16(b, uint16(len(c.Tenant)))
	b = append(b, c.Tenant...)
	b = binary.BigEndian.AppendUint32(b, c.Version)
	return b
}

// Encryption context keys of Map. They are part of the stored contract:
// changing them makes every sealed blob unopenable.
const (
	MapKeyPurpose = "krypton-purpose"
	MapKeyRegion  = "krypton-region"
	MapKeyTenant  = "krypton-tenant"
	MapKeyVersion = "krypton-l2-version"

	// MapPurposeL2 is the value of MapKeyPurpose.
	MapPurposeL2 = "tenant-key"
)

// Map returns c as an encryption context for AWS KMS, which binds a
// string map rather than bytes (and logs it in CloudTrail, which is why
// it holds names, never secrets):
//
//	{"krypton-purpose": "tenant-key", "krypton-region": "eu-west-1",
//	 "krypton-tenant": "acme", "krypton-l2-version": "3"}
func (c Context) Map() map[string]string {
	return map[string]string{
		MapKeyPurpose: MapPurposeL2,
		MapKeyRegion:  c.Region,
		MapKeyTenant:  c.Tenant,
		MapKeyVersion: strconv.FormatUint(uint64(c.Version), 10),
	}
}

// String returns "region/tenant@v3", for logs.
func (c Context) String() string {
	return c.Region + "/" + c.Tenant + "@v" + strconv.FormatUint(uint64(c.Version), 10)
}

// CheckSeal validates the arguments of Provider.Seal. Providers call it
// first so that every provider refuses the same inputs with the same
// errors.
func CheckSeal(plaintext []byte, ac Context) error {
	if len(plaintext) == 0 || len(plaintext) > MaxPlaintextSize {
		return fmt.Errorf("%w: %d bytes, want 1 to %d", ErrPlaintextSize, len(plaintext), MaxPlaintextSize)
	}
	return ac.Validate()
}

// CheckUnseal validates the arguments of Provider.Unseal. An empty or
// oversized blob is a *DeniedError with ReasonInvalidCiphertext, as any
// other blob that does not open; provider names the scheme.
func CheckUnseal(provider string, sealed []byte, ac Context) error {
	if err := ac.Validate(); err != nil {
		return err
	}
	if len(sealed) == 0 || len(sealed) > MaxSealedSize {
		return Deny("unseal", provider, ReasonInvalidCiphertext,
			fmt.Errorf("anchor: sealed blob of %d bytes, want 1 to %d", len(sealed), MaxSealedSize))
	}
	return nil
}
