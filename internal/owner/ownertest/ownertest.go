// Package ownertest makes tenant owner keys and consents for tests.
//
//	k := ownertest.New(t)          // a fresh Ed25519 owner key
//	k.Public                       // its public key, PKIX PEM (CreateTenant's owner_public_key)
//	k.Fingerprint()                // as the planes show it
//	k.Consent(t, owner.Statement{Tenant: "acme", Op: owner.OpSetAnchor, Anchor: uri, RequestID: id})
//	                               // a consent valid for an hour from now
package ownertest

import (
	"testing"
	"time"

	"github.com/kryptonkms/krypton/internal/owner"
)

// Key is an owner key pair.
type Key struct {
	Signer  *owner.Signer
	Public  string // PKIX PEM
	Private []byte // PKCS #8 PEM
}

// New makes an Ed25519 owner key.
func New(t testing.TB) *Key {
	t.Helper()
	priv, pub, err := owner.GenerateKey()
	if err != nil {
		t.Fatal(err)
	}
	s, err := owner.ParsePrivateKey(priv)
	if err != nil {
		t.Fatal(err)
	}
	return &Key{Signer: s, Public: string(pub), Private: priv}
}

// Fingerprint returns the key's fingerprint.
func (k *Key) Fingerprint() string { return owner.Fingerprint(k.Public) }

// Consent signs st, valid from now for an hour unless st sets Issued and Expires.
func (k *Key) Consent(t testing.TB, st owner.Statement) string {
	t.Helper()
	if st.Issued == 0 && st.Expires == 0 {
		now := time.Now()
		st.Issued, st.Expires = now.Unix(), now.Add(time.Hour).Unix()
	}
	c, err := k.Signer.Sign(st)
	if err != nil {
		t.Fatal(err)
	}
	return c
}
