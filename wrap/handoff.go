package wrap

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/fips140"
	"crypto/hkdf"
	"crypto/hpke"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
)

// The L2 handoff from leader to follower (NodeService.FetchTenantKey) seals the key with HPKE
// (RFC 9180, base mode) to a key pair the follower made for this one request, so no protobuf message
// ever carries a plaintext L2, even inside TLS, and a recorded response is useless once the follower
// has discarded its private key. Suite: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM —
// everything from Go's standard library.
//
// The HPKE info string binds the purpose, the region, the tenant, the L2 version and the requesting
// node, so a sealed key cannot be replayed to another node or passed off as another tenant's key.
// The same info is the AEAD's additional data. SealHandoff and HandoffRecipient.Open are the pair;
// testdata/handoff.json holds a known answer (TestHandoffVector).
//
// In FIPS 140-3 mode (crypto/fips140.Enabled) the recipient makes a P-256 key instead, and the
// handoff is the FIPS construction: ECDH P-256 with an ephemeral sender key (SP 800-56A), HKDF-SHA256
// (SP 800-56C) over the shared secret with salt enc || recipient public key and the same info, and
// AES-256-GCM through the module's random-nonce construction with info as additional data. Every step
// is a service of the Go Cryptographic Module. It is not HPKE because, built with GOFIPS140=v1.0.0,
// crypto/hpke seals with GCM under caller-chosen nonces, which GODEBUG=fips140=only refuses. The
// recipient's public key says which construction it wants (32 bytes: X25519 HPKE; 65: P-256), so a
// leader in either mode serves a follower in either mode, except that a leader in FIPS 140-only
// mode refuses X25519 with ErrFIPSMode.

const handoffLabel = "krypton/v1 L2 handoff"

// handoffInfo encodes the binding as length-prefixed fields so no two tuples encode alike.
func handoffInfo(region, node string, id KeyID) []byte {
	b := make([]byte, 0, len(handoffLabel)+len(region)+len(node)+len(id.Tenant)+16)
	for _, s := range []string{handoffLabel, region, node, id.Tenant} {
		b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
		b = append(b, s...)
	}
	return binary.BigEndian.AppendUint32(b, id.Version)
}

func handoffSuite() (hpke.KDF, hpke.AEAD) { return hpke.HKDFSHA256(), hpke.AES256GCM() }

// HandoffRecipient is the requesting node's side of an L2 handoff: a fresh X25519 key pair (P-256
// in FIPS 140-3 mode) for one request. Drop it once the answer is opened; a recorded answer is then
// useless.
type HandoffRecipient struct {
	priv *ecdh.PrivateKey
}

// NewHandoffRecipient makes a fresh key pair with crypto/rand: X25519, or P-256 when
// crypto/fips140.Enabled().
func NewHandoffRecipient() (*HandoffRecipient, error) {
	return newHandoffRecipient(fips140.Enabled())
}

func newHandoffRecipient(fips bool) (*HandoffRecipient, error) {
	curve := ecdh.X25519()
	if fips {
		curve = ecdh.P256()
	}
	priv, err := curve.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("wrap: handoff key: %w", err)
	}
	return &HandoffRecipient{priv: priv}, nil
}

// PublicKey is the recipient's public key, sent with the request: X25519 (32 bytes) or P-256
// (65 bytes, uncompressed).
func (r *HandoffRecipient) PublicKey() []byte { return r.priv.PublicKey().Bytes() }

// Open decrypts a sealed L2 made by SealHandoff for region, node (the recipient's own) and id
// straight into a TenantKey; the intermediate plaintext is wiped.
func (r *HandoffRecipient) Open(region, node string, id KeyID, enc, ciphertext []byte) (*TenantKey, error) {
	if r.priv.Curve() == ecdh.P256() {
		return openHandoffP256(r.priv, handoffInfo(region, node, id), id, enc, ciphertext)
	}
	sk, err := hpke.NewDHKEMPrivateKey(r.priv)
	if err != nil {
		return nil, fmt.Errorf("wrap: handoff key: %w", err)
	}
	kdf, aead := handoffSuite()
	info := handoffInfo(region, node, id)
	recipient, err := hpke.NewRecipient(enc, sk, kdf, aead, info)
	if err != nil {
		return nil, fmt.Errorf("wrap: handoff: malformed encapsulated key")
	}
	plain, err := recipient.Open(info, ciphertext)
	if err != nil {
		return nil, fmt.Errorf("wrap: handoff: sealed tenant key does not authenticate")
	}
	// TenantKeyFromBytes copies the bytes into locked memory and wipes plain.
	return TenantKeyFromBytes(id, plain)
}

// SealHandoff is the leader's side: it seals k to the recipient's public key, bound to region and
// the requesting node. It returns HPKE's encapsulated key and the ciphertext.
func SealHandoff(region, node string, k *TenantKey, recipientPub []byte) (enc, ciphertext []byte, err error) {
	if len(recipientPub) == p256PublicKeySize {
		return sealHandoffP256(handoffInfo(region, node, k.ID()), k, recipientPub)
	}
	if fips140.Enforced() {
		return nil, nil, fmt.Errorf("%w: the requesting node asked for an X25519 (HPKE) handoff, which FIPS 140-only mode refuses; run every node of the region in FIPS mode (GODEBUG=fips140=on or only)", ErrFIPSMode)
	}
	pub, err := ecdh.X25519().NewPublicKey(recipientPub)
	if err != nil {
		return nil, nil, fmt.Errorf("wrap: handoff: malformed recipient public key")
	}
	pk, err := hpke.NewDHKEMPublicKey(pub)
	if err != nil {
		return nil, nil, fmt.Errorf("wrap: handoff: %w", err)
	}
	kdf, aead := handoffSuite()
	info := handoffInfo(region, node, k.ID())
	enc, sender, err := hpke.NewSender(pk, kdf, aead, info)
	if err != nil {
		return nil, nil, fmt.Errorf("wrap: handoff: %w", err)
	}
	plain := k.Bytes()
	defer clear(plain)
	ciphertext, err = sender.Seal(info, plain)
	if err != nil {
		return nil, nil, fmt.Errorf("wrap: handoff: %w", err)
	}
	return enc, ciphertext, nil
}

// p256PublicKeySize is an uncompressed P-256 point: 0x04 || x || y.
const p256PublicKeySize = 65

// handoffKeyP256 derives the FIPS handoff's AES-256-GCM from the ECDH shared secret.
func handoffKeyP256(shared, enc, recipientPub, info []byte) (cipher.AEAD, error) {
	salt := append(append(make([]byte, 0, len(enc)+len(recipientPub)), enc...), recipientPub...)
	k, err := hkdf.Key(sha256.New, shared, salt, string(info), KeySize)
	if err != nil {
		return nil, err
	}
	defer clear(k)
	block, err := aes.NewCipher(k)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCMWithRandomNonce(block)
}

func sealHandoffP256(info []byte, k *TenantKey, recipientPub []byte) (enc, ciphertext []byte, err error) {
	pub, err := ecdh.P256().NewPublicKey(recipientPub)
	if err != nil {
		return nil, nil, fmt.Errorf("wrap: handoff: malformed recipient public key")
	}
	eph, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("wrap: handoff: %w", err)
	}
	shared, err := eph.ECDH(pub)
	if err != nil {
		return nil, nil, fmt.Errorf("wrap: handoff: %w", err)
	}
	defer clear(shared)
	enc = eph.PublicKey().Bytes()
	aead, err := handoffKeyP256(shared, enc, recipientPub, info)
	if err != nil {
		return nil, nil, fmt.Errorf("wrap: handoff: %w", err)
	}
	plain := k.Bytes()
	defer clear(plain)
	return enc, aead.Seal(nil, nil, plain, info), nil
}

var errHandoffAuth = errors.New("wrap: handoff: sealed tenant key does not authenticate")

func openHandoffP256(priv *ecdh.PrivateKey, info []byte, id KeyID, enc, ciphertext []byte) (*TenantKey, error) {
	eph, err := ecdh.P256().NewPublicKey(enc)
	if err != nil {
		return nil, fmt.Errorf("wrap: handoff: malformed encapsulated key (want a P-256 key: is the leader running an older Krypton?)")
	}
	shared, err := priv.ECDH(eph)
	if err != nil {
		return nil, fmt.Errorf("wrap: handoff: %w", err)
	}
	defer clear(shared)
	aead, err := handoffKeyP256(shared, enc, priv.PublicKey().Bytes(), info)
	if err != nil {
		return nil, fmt.Errorf("wrap: handoff: %w", err)
	}
	plain, err := aead.Open(nil, nil, ciphertext, info)
	if err != nil {
		return nil, errHandoffAuth
	}
	return TenantKeyFromBytes(id, plain)
}
