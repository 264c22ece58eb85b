// Package oidctest runs an in-process OpenID Connect issuer for tests: an
// HTTPS server on loopback that serves a real discovery document
// (/.well-known/openid-configuration) and JWKS, and signs real JWTs with
// go-jose, so that transport's OIDC verifier is tested against the same
// documents and signatures an IdP produces.
//
//	iss, err := oidctest.Start(jose.RS256)
//	defer iss.Close()
//	v, err := transport.NewOIDCVerifier(transport.OIDCConfig{Issuer: iss.URL(), Roots: iss.Roots(), ...})
//	tok, err := iss.Sign(iss.Claims("alice", "krypton", time.Hour, map[string]any{"roles": []string{"admins"}}))
package oidctest

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"time"

	jose "github.com/go-jose/go-jose/v4"
)

// Key is one signing key of the issuer.
type Key struct {
	ID  string
	Alg jose.SignatureAlgorithm
	key crypto.Signer
}

// NewKey makes a key for alg (RS256 or ES256), named id.
func NewKey(id string, alg jose.SignatureAlgorithm) (*Key, error) {
	var k crypto.Signer
	var err error
	switch alg {
	case jose.RS256:
		k, err = rsa.GenerateKey(rand.Reader, 2048)
	case jose.ES256:
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	default:
		return nil, fmt.Errorf("oidctest: unsupported algorithm %s", alg)
	}
	if err != nil {
		return nil, err
	}
	return &Key{ID: id, Alg: alg, key: k}, nil
}

// Sign signs claims (a JSON object) with k, as a compact JWS with "kid" and
// "typ": "JWT".
func (k *Key) Sign(claims map[string]any) (string, error) {
	payload, err := json.Marshal(claims)
	if err != nil {
		return "", err
	}
	s, err := jose.NewSigner(jose.SigningKey{Algorithm: k.Alg, Key: jose.JSONWebKey{Key: k.key, KeyID: k.ID}},
		(&jose.SignerOptions{}).WithType("JWT"))
	if err != nil {
		return "", err
	}
	jws, err := s.Sign(payload)
	if err != nil {
		return "", err
	}
	return jws.CompactSerialize()
}

func (k *Key) public() jose.JSONWebKey {
	return jose.JSONWebKey{Key: k.key.Public(), KeyID: k.ID, Algorithm: string(k.Alg), Use: "sig"}
}

// Issuer is a running in-process OIDC issuer.
type Issuer struct {
	srv       *httptest.Server
	jwksFetch atomic.Int64

	mu   sync.Mutex
	keys []*Key // published in the JWKS; keys[0] signs
}

// Start starts an issuer on 127.0.0.1 with one fresh key of alg, id "k1".
func Start(alg jose.SignatureAlgorithm) (*Issuer, error) {
	k, err := NewKey("k1", alg)
	if err != nil {
		return nil, err
	}
	iss := &Issuer{keys: []*Key{k}}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /.well-known/openid-configuration", iss.discovery)
	mux.HandleFunc("GET /jwks", iss.jwks)
	iss.srv = httptest.NewTLSServer(mux)
	return iss, nil
}

// URL is the issuer URL ("iss"), https://127.0.0.1:<port>.
func (iss *Issuer) URL() string { return iss.srv.URL }

// Roots trusts the issuer's TLS certificate.
func (iss *Issuer) Roots() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(iss.srv.Certificate())
	return p
}

// RootsPEM is the issuer's TLS certificate in PEM, for a CA file (-oidc-ca).
func (iss *Issuer) RootsPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: iss.srv.Certificate().Raw})
}

// JWKSFetches counts the requests for the JWKS so far.
func (iss *Issuer) JWKSFetches() int64 { return iss.jwksFetch.Load() }

// Close stops the server.
func (iss *Issuer) Close() {
	iss.srv.CloseClientConnections()
	iss.srv.Close()
}

// SigningKey is the key Sign uses now.
func (iss *Issuer) SigningKey() *Key {
	iss.mu.Lock()
	defer iss.mu.Unlock()
	return iss.keys[0]
}

// Rotate makes k the signing key and publishes it; with keepOld the previous
// keys stay published (an IdP's usual overlap), otherwise they are dropped.
func (iss *Issuer) Rotate(k *Key, keepOld bool) {
	iss.mu.Lock()
	defer iss.mu.Unlock()
	if keepOld {
		iss.keys = append([]*Key{k}, iss.keys...)
	} else {
		iss.keys = []*Key{k}
	}
}

// Claims returns the registered claims of a token for sub and aud, issued
// now by this issuer and valid for ttl, plus extra.
func (iss *Issuer) Claims(sub, aud string, ttl time.Duration, extra map[string]any) map[string]any {
	now := time.Now()
	c := map[string]any{
		"iss": iss.URL(),
		"sub": sub,
		"aud": aud,
		"iat": now.Unix(),
		"exp": now.Add(ttl).Unix(),
	}
	for k, v := range extra {
		c[k] = v
	}
	return c
}

// Sign signs claims with the current signing key.
func (iss *Issuer) Sign(claims map[string]any) (string, error) {
	return iss.SigningKey().Sign(claims)
}

func (iss *Issuer) discovery(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, map[string]any{
		"issuer":                                iss.URL(),
		"authorization_endpoint":                iss.URL() + "/authorize",
		"token_endpoint":                        iss.URL() + "/token",
		"jwks_uri":                              iss.URL() + "/jwks",
		"response_types_supported":              []string{"code"},
		"subject_types_supported":               []string{"public"},
		"id_token_signing_alg_values_supported": []string{"RS256", "ES256"},
	})
}

func (iss *Issuer) jwks(w http.ResponseWriter, _ *http.Request) {
	iss.jwksFetch.Add(1)
	iss.mu.Lock()
	var set jose.JSONWebKeySet
	for _, k := range iss.keys {
		set.Keys = append(set.Keys, k.public())
	}
	iss.mu.Unlock()
	writeJSON(w, set)
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(v)
}
