package region

import (
	"crypto/ecdh"
	"crypto/hpke"
	"crypto/rand"
	"encoding/binary"
	"fmt"

	"github.com/kryptonkms/krypton/wrap"
)

// The L2 handoff from leader to follower (NodeService.FetchTenantKey) seals the key with HPKE
// (RFC 9180, base mode) to a key pair the follower made for this one request, so no protobuf message
// ever carries a plaintext L2, even inside TLS, and a recorded response is useless once the follower
// has discarded its private key. Suite: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM —
// everything from Go's standard library.
//
// The HPKE info string binds the purpose, the region, the tenant, the L2 version and the requesting
// node, so a sealed key cannot be replayed to another node or passed off as another tenant's key.

const handoffLabel = "krypton/v1 L2 handoff"

// handoffInfo encodes the binding as length-prefixed fields so no two tuples encode alike.
func handoffInfo(region, node string, id wrap.KeyID) []byte {
	b := make([]byte, 0, len(handoffLabel)+len(region)+len(node)+len(id.Tenant)+16)
	for _, s := range []string{handoffLabel, region, node, id.Tenant} {
		b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
		b = append(b, s...)
	}
	return binary.BigEndian.AppendUint32(b, id.Version)
}

func handoffSuite() (hpke.KDF, hpke.AEAD) { return hpke.HKDFSHA256(), hpke.AES256GCM() }

// handoffRecipient is the follower's side: a fresh X25519 key pair for one request.
type handoffRecipient struct {
	priv *ecdh.PrivateKey
}

func newHandoffRecipient() (*handoffRecipient, error) {
	priv, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("region: handoff key: %w", err)
	}
	return &handoffRecipient{priv: priv}, nil
}

func (r *handoffRecipient) publicKey() []byte { return r.priv.PublicKey().Bytes() }

// open decrypts a sealed L2 straight into a TenantKey; the intermediate plaintext is wiped.
func (r *handoffRecipient) open(region, node string, id wrap.KeyID, enc, ciphertext []byte) (*wrap.TenantKey, error) {
	sk, err := hpke.NewDHKEMPrivateKey(r.priv)
	if err != nil {
		return nil, fmt.Errorf("region: handoff key: %w", err)
	}
	kdf, aead := handoffSuite()
	info := handoffInfo(region, node, id)
	recipient, err := hpke.NewRecipient(enc, sk, kdf, aead, info)
	if err != nil {
		return nil, fmt.Errorf("region: handoff: malformed encapsulated key")
	}
	plain, err := recipient.Open(info, ciphertext)
	if err != nil {
		return nil, fmt.Errorf("region: handoff: sealed tenant key does not authenticate")
	}
	// TenantKeyFromBytes copies the bytes into locked memory and wipes plain.
	return wrap.TenantKeyFromBytes(id, plain)
}

// sealHandoff is the leader's side: it seals k to the follower's public key.
func sealHandoff(region, node string, k *wrap.TenantKey, recipientPub []byte) (enc, ciphertext []byte, err error) {
	pub, err := ecdh.X25519().NewPublicKey(recipientPub)
	if err != nil {
		return nil, nil, fmt.Errorf("region: handoff: malformed recipient public key")
	}
	pk, err := hpke.NewDHKEMPublicKey(pub)
	if err != nil {
		return nil, nil, fmt.Errorf("region: handoff: %w", err)
	}
	kdf, aead := handoffSuite()
	info := handoffInfo(region, node, k.ID())
	enc, sender, err := hpke.NewSender(pk, kdf, aead, info)
	if err != nil {
		return nil, nil, fmt.Errorf("region: handoff: %w", err)
	}
	plain := k.Bytes()
	defer clear(plain)
	ciphertext, err = sender.Seal(info, plain)
	if err != nil {
		return nil, nil, fmt.Errorf("region: handoff: %w", err)
	}
	return enc, ciphertext, nil
}
