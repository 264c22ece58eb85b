// Package owner is a tenant owner's consent: a statement signed by the tenant's owner key, which
// the customer holds and Krypton's operators do not, that a change to the tenant's root of trust
// (moving its anchor, lifting a deleted anchor, rekeying it in a region, replacing the owner key)
// may be made. The operator relays it; governance and the regions verify it against the owner
// public key registered for the tenant before anything is proposed, and their state machines
// verify it again when they apply the change (docs/security.md, "Tenant owner consent").
//
// A consent is a JWS (RFC 7515) in compact serialization, signed with EdDSA (Ed25519) or ES256
// (ECDSA P-256) by go-jose, whose payload is a Statement in JSON. The signature covers the payload
// bytes as carried, so no canonical re-encoding is needed: the verifier decodes the payload
// strictly and compares every field with the request. An owner key is a PKIX public key in PEM; it
// is named by its RFC 7638 JWK thumbprint (SHA-256, base64url), which is what the audit log shows.
package owner

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// Type is the statement type every consent carries.
const Type = "krypton-owner-consent/1"

// Operations a consent may allow.
const (
	OpSetAnchor = "set-anchor" // governance: move the anchor, or lift a deleted one
	OpSetOwner  = "set-owner"  // governance or a region: replace the owner key
	OpRekey     = "rekey"      // a region: reseal the tenant's L2 under another anchor
	// OpSetRegions: governance, a shared tenant's region set widened (a region added) or a
	// tenant made shared (its home region chosen).
	OpSetRegions = "set-regions"
)

// Limits.
const (
	// MaxTTL is the longest a consent may be valid. It is shorter than the time the planes
	// remember request ids (48 hours), and the planes also remember every consent they applied
	// until it expires, so that a consent is used once.
	MaxTTL = 24 * time.Hour
	// DefaultTTL is how long `krypton owner consent` makes a consent valid.
	DefaultTTL = time.Hour
	// MaxSkew is how far in the future a consent's issue time may be (clocks differ).
	MaxSkew = 5 * time.Minute
	// MaxConsent bounds an encoded consent; MaxPublicKey an owner public key in PEM.
	MaxConsent   = 8 << 10
	MaxPublicKey = 4 << 10
)

var (
	// ErrMalformed is a consent or key that does not parse: the request is malformed.
	ErrMalformed = errors.New("owner: malformed")
	// ErrDenied is a consent that parses but does not allow the change: a wrong or missing
	// signature, another tenant, operation or parameter, or an expired consent.
	ErrDenied = errors.New("owner: consent does not allow this change")
)

func malformed(msg string) error { return fmt.Errorf("%w: %s", ErrMalformed, msg) }
func denied(msg string) error    { return fmt.Errorf("%w: %s", ErrDenied, msg) }

var algorithms = []jose.SignatureAlgorithm{jose.EdDSA, jose.ES256}

// Statement is what a consent says: the owner of Tenant allows Op with these parameters, under
// this request id, until Expires.
type Statement struct {
	Type      string `json:"typ"`
	Tenant    string `json:"tenant"`
	Op        string `json:"op"`
	Anchor    string `json:"anchor,omitempty"`    // OpSetAnchor, OpRekey: the new anchor URI, exactly
	Region    string `json:"region,omitempty"`    // OpRekey: the region it is for; OpSetRegions: the home region it sets
	Regions   string `json:"regions,omitempty"`   // OpSetRegions: the new region set, sorted, joined with ","
	OwnerKey  string `json:"owner_key,omitempty"` // OpSetOwner: fingerprint of the new owner key
	RequestID string `json:"request_id"`
	Issued    int64  `json:"iat"` // Unix seconds
	Expires   int64  `json:"exp"` // Unix seconds
}

// PublicKey is a parsed owner public key.
type PublicKey struct {
	key         crypto.PublicKey // ed25519.PublicKey or *ecdsa.PublicKey (P-256)
	fingerprint string
}

// Fingerprint names the key: "sha256:" and its RFC 7638 JWK thumbprint in base64url.
func (k *PublicKey) Fingerprint() string { return k.fingerprint }

// ParsePublicKey parses an owner public key: one PEM "PUBLIC KEY" block (PKIX) holding an Ed25519
// or ECDSA P-256 key, nothing else. The error never echoes the input.
func ParsePublicKey(pemText string) (*PublicKey, error) {
	if len(pemText) > MaxPublicKey {
		return nil, malformed(fmt.Sprintf("owner public key longer than %d bytes", MaxPublicKey))
	}
	block, rest := pem.Decode([]byte(pemText))
	if block == nil || block.Type != "PUBLIC KEY" || len(bytes.TrimSpace(rest)) != 0 {
		return nil, malformed("owner public key must be one PEM \"PUBLIC KEY\" block (krypton owner keygen writes one)")
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, malformed("owner public key is not a PKIX public key")
	}
	switch pk := k.(type) {
	case ed25519.PublicKey:
	case *ecdsa.PublicKey:
		if pk.Curve != elliptic.P256() {
			return nil, malformed("owner public key must be Ed25519 or ECDSA P-256")
		}
	default:
		return nil, malformed("owner public key must be Ed25519 or ECDSA P-256")
	}
	jwk := jose.JSONWebKey{Key: k}
	tp, err := jwk.Thumbprint(crypto.SHA256)
	if err != nil {
		return nil, malformed("owner public key has no thumbprint")
	}
	return &PublicKey{key: k, fingerprint: "sha256:" + base64.RawURLEncoding.EncodeToString(tp)}, nil
}

// Fingerprint parses pemText and returns its fingerprint, or "" if it does not parse.
func Fingerprint(pemText string) string {
	k, err := ParsePublicKey(pemText)
	if err != nil {
		return ""
	}
	return k.Fingerprint()
}

// GenerateKey makes an Ed25519 owner key pair and returns the private key (PKCS #8 PEM) and the
// public key (PKIX PEM).
func GenerateKey() (privPEM, pubPEM []byte, err error) {
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	pk8, err := x509.MarshalPKCS8PrivateKey(priv)
	if err != nil {
		return nil, nil, err
	}
	pkix, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: pk8}), pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: pkix}), nil
}

// Signer is a parsed owner private key.
type Signer struct {
	key crypto.Signer
	alg jose.SignatureAlgorithm
}

// ParsePrivateKey parses an owner private key: PKCS #8 PEM, Ed25519 or ECDSA P-256 (or a SEC 1
// "EC PRIVATE KEY" of P-256, as openssl writes).
func ParsePrivateKey(pemText []byte) (*Signer, error) {
	block, _ := pem.Decode(pemText)
	if block == nil {
		return nil, malformed("owner private key is not PEM")
	}
	var k any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		k, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		k, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, malformed("owner private key must be a PEM \"PRIVATE KEY\" (krypton owner keygen writes one)")
	}
	if err != nil {
		return nil, malformed("owner private key does not parse")
	}
	switch pk := k.(type) {
	case ed25519.PrivateKey:
		return &Signer{key: pk, alg: jose.EdDSA}, nil
	case *ecdsa.PrivateKey:
		if pk.Curve == elliptic.P256() {
			return &Signer{key: pk, alg: jose.ES256}, nil
		}
	}
	return nil, malformed("owner private key must be Ed25519 or ECDSA P-256")
}

// PublicPEM returns the signer's public key in PKIX PEM.
func (s *Signer) PublicPEM() ([]byte, error) {
	b, err := x509.MarshalPKIXPublicKey(s.key.Public())
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: b}), nil
}

// Sign returns st signed as a compact JWS. It fills in Type.
func (s *Signer) Sign(st Statement) (string, error) {
	st.Type = Type
	payload, err := json.Marshal(st)
	if err != nil {
		return "", err
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: s.alg, Key: s.key}, nil)
	if err != nil {
		return "", err
	}
	jws, err := signer.Sign(payload)
	if err != nil {
		return "", err
	}
	return jws.CompactSerialize()
}

// Consent is a parsed consent whose signature has been checked.
type Consent struct {
	Statement
	// Digest names the statement (SHA-256 of the signed payload, hex): the planes remember the
	// digests of the consents they applied until they expire, so that each is used once.
	Digest string
}

// Verify checks that consent is signed by key and allows exactly want (Tenant, Op, Anchor, Region,
// Regions, OwnerKey, RequestID) at now. It returns ErrMalformed for a consent that does not parse and
// ErrDenied for any other refusal; the error never echoes the consent.
func Verify(consent string, key *PublicKey, want Statement, now time.Time) (*Consent, error) {
	if consent == "" {
		return nil, denied("the change needs the tenant owner's consent")
	}
	if len(consent) > MaxConsent {
		return nil, malformed(fmt.Sprintf("consent longer than %d bytes", MaxConsent))
	}
	jws, err := jose.ParseSignedCompact(consent, algorithms)
	if err != nil {
		return nil, malformed("consent is not a compact JWS signed with EdDSA or ES256 (krypton owner consent makes one)")
	}
	if len(jws.Signatures) != 1 {
		return nil, malformed("consent must carry one signature")
	}
	payload, err := jws.Verify(key.key)
	if err != nil {
		return nil, denied("the consent is not signed by the tenant's owner key " + key.fingerprint)
	}
	var st Statement
	dec := json.NewDecoder(bytes.NewReader(payload))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&st); err != nil || dec.More() || st.Type != Type {
		return nil, malformed("consent statement does not parse")
	}
	switch {
	case st.Tenant != want.Tenant:
		return nil, denied("the consent is for another tenant")
	case st.Op != want.Op:
		return nil, denied("the consent is for another operation (" + quoteOp(st.Op) + ")")
	case st.Anchor != want.Anchor:
		return nil, denied("the consent names another anchor")
	case st.Region != want.Region:
		return nil, denied("the consent names another region")
	case st.Regions != want.Regions:
		return nil, denied("the consent names another region set")
	case st.OwnerKey != want.OwnerKey:
		return nil, denied("the consent names another owner key")
	case st.RequestID != want.RequestID:
		return nil, denied("the consent is for another request id (give the one it names with -request-id, or leave -request-id out)")
	}
	exp, iat := time.Unix(st.Expires, 0), time.Unix(st.Issued, 0)
	switch {
	case !now.Before(exp):
		return nil, denied("the consent has expired")
	case iat.After(now.Add(MaxSkew)):
		return nil, denied("the consent is issued in the future")
	case exp.Sub(iat) > MaxTTL || exp.After(now.Add(MaxTTL+MaxSkew)):
		return nil, denied(fmt.Sprintf("the consent is valid for longer than %s", MaxTTL))
	}
	sum := sha256.Sum256(payload)
	return &Consent{Statement: st, Digest: hex.EncodeToString(sum[:])}, nil
}

// quoteOp names an operation from a verified statement, or "unknown" for one that is not.
func quoteOp(op string) string {
	switch op {
	case OpSetAnchor, OpSetOwner, OpRekey, OpSetRegions:
		return op
	}
	return "unknown"
}

// ValidFingerprint reports whether s has the form of a key fingerprint ("sha256:" and 43
// base64url characters), so that a fingerprint read from a message can be logged safely.
func ValidFingerprint(s string) bool {
	rest, ok := strings.CutPrefix(s, "sha256:")
	if !ok || len(rest) != 43 {
		return false
	}
	_, err := base64.RawURLEncoding.DecodeString(rest)
	return err == nil
}

// RequestIDOf returns the request id a consent names, without checking its signature (the
// operator's CLI uses it to send the change under that id; the planes verify the consent).
func RequestIDOf(consent string) (string, error) {
	jws, err := jose.ParseSignedCompact(consent, algorithms)
	if err != nil {
		return "", malformed("not a consent")
	}
	var st Statement
	if err := json.Unmarshal(jws.UnsafePayloadWithoutVerification(), &st); err != nil || st.Type != Type {
		return "", malformed("not a consent")
	}
	return st.RequestID, nil
}
