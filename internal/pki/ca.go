package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"math/big"
	"time"
)

// Default lifetimes. A development CA outlives every certificate it issues;
// leaf certificates are short enough that a leaked one ages out, long enough
// that a development cluster does not need rotation tooling.
const (
	CALifetime       = 5 * 365 * 24 * time.Hour
	NodeLifetime     = 365 * 24 * time.Hour
	ServiceLifetime  = 90 * 24 * time.Hour
	OperatorLifetime = 30 * 24 * time.Hour
)

// clockSkew backdates NotBefore so that a certificate issued on one machine
// is valid at once on another whose clock is slightly behind.
const clockSkew = 5 * time.Minute

// CA is a certificate authority that issues node, service and operator
// certificates. It is meant for development and tests (krypton dev,
// krypton certs); production deployments bring their own PKI and only need
// the CA certificate pool.
type CA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// NewCA creates a self-signed ECDSA P-256 CA named commonName, valid for
// lifetime (0 means CALifetime).
func NewCA(commonName string, lifetime time.Duration) (*CA, error) {
	if commonName == "" {
		return nil, fmt.Errorf("pki: CA common name is empty")
	}
	if lifetime <= 0 {
		lifetime = CALifetime
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: generate CA key: %w", err)
	}
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	skid, err := subjectKeyID(&key.PublicKey)
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName, Organization: []string{"Krypton"}},
		NotBefore:             now.Add(-clockSkew),
		NotAfter:              now.Add(lifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		SubjectKeyId:          skid,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, fmt.Errorf("pki: create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: parse CA certificate: %w", err)
	}
	return &CA{cert: cert, key: key}, nil
}

// Certificate returns the CA certificate.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// CertPEM returns the CA certificate in PEM form.
func (ca *CA) CertPEM() []byte { return encodeCertPEM(ca.cert.Raw) }

// Pool returns a certificate pool holding only this CA.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

func newSerial() (*big.Int, error) {
	// 128 random bits: unique without coordination, as CA/B baseline asks.
	s, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return nil, fmt.Errorf("pki: serial number: %w", err)
	}
	return s.Add(s, big.NewInt(1)), nil
}

func subjectKeyID(pub *ecdsa.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, fmt.Errorf("pki: marshal public key: %w", err)
	}
	sum := sha256.Sum256(der)
	return sum[:20], nil
}
