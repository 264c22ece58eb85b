package wrap

import (
	"crypto/ecdh"
	"crypto/hpke"
	"crypto/rand"
	"encoding/binary"
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

// HandoffRecipient is the requesting node's side of an L2 handoff: a fresh X25519 key pair for
// one request. Drop it once the answer is opened; a recorded answer is then useless.
type HandoffRecipient struct {
	priv *ecdh.PrivateKey
}

// NewHandoffRecipient makes a fresh key pair with crypto/rand.
func NewHandoffRecipient() (*HandoffRecipient, error) {
	priv, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("wrap: handoff key: %w", err)
	}
	return &HandoffRecipient{priv: priv}, nil
}

// PublicKey is the recipient's X25519 public key (32 bytes), sent with the request.
func (r *HandoffRecipient) PublicKey() []byte { return r.priv.PublicKey().Bytes() }

// Open decrypts a sealed L2 made by SealHandoff for region, node (the recipient's own) and id
// straight into a TenantKey; the intermediate plaintext is wiped.
func (r *HandoffRecipient) Open(region, node string, id KeyID, enc, ciphertext []byte) (*TenantKey, error) {
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
