package pki

import (
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
)

const (
	pemCertificate = "CERTIFICATE"
	pemPrivateKey  = "PRIVATE KEY"
	pemECKey       = "EC PRIVATE KEY"
)

// WriteFiles writes the CA certificate (0644) and its private key (0600) as
// PEM files.
func (ca *CA) WriteFiles(certPath, keyPath string) error {
	return writeFiles(certPath, keyPath, ca.cert.Raw, ca.key)
}

// WriteFiles writes the certificate (0644) and its private key (0600) as
// PEM files.
func (c *Certificate) WriteFiles(certPath, keyPath string) error {
	return writeFiles(certPath, keyPath, c.leaf.Raw, c.key)
}

// LoadCA reads a CA written by CA.WriteFiles.
func LoadCA(certPath, keyPath string) (*CA, error) {
	cert, key, err := loadPair(certPath, keyPath)
	if err != nil {
		return nil, err
	}
	if !cert.IsCA || !cert.BasicConstraintsValid {
		return nil, fmt.Errorf("pki: %s is not a CA certificate", certPath)
	}
	return &CA{cert: cert, key: key}, nil
}

// LoadCertificate reads a certificate written by Certificate.WriteFiles.
func LoadCertificate(certPath, keyPath string) (*Certificate, error) {
	cert, key, err := loadPair(certPath, keyPath)
	if err != nil {
		return nil, err
	}
	return &Certificate{leaf: cert, key: key}, nil
}

// LoadCertPool reads a PEM file of one or more CA certificates, for nodes
// and clients that trust a CA without holding its key.
func LoadCertPool(certPath string) (*x509.CertPool, error) {
	data, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("pki: read CA certificates: %w", err)
	}
	pool := x509.NewCertPool()
	n := 0
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != pemCertificate {
			continue
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, fmt.Errorf("pki: parse CA certificate in %s: %w", certPath, err)
		}
		pool.AddCert(c)
		n++
	}
	if n == 0 {
		return nil, fmt.Errorf("pki: no certificate in %s", certPath)
	}
	return pool, nil
}

func encodeCertPEM(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: pemCertificate, Bytes: der})
}

func writeFiles(certPath, keyPath string, certDER []byte, key *ecdsa.PrivateKey) error {
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("pki: marshal private key: %w", err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: pemPrivateKey, Bytes: keyDER})
	// The key goes first: a certificate without its key is useless, a key
	// without its certificate is merely unused.
	if err := writeAtomic(keyPath, keyPEM, 0o600); err != nil {
		return err
	}
	return writeAtomic(certPath, encodeCertPEM(certDER), 0o644)
}

// writeAtomic writes through a temporary file in the same directory and a
// rename, so that a crash leaves either the old file or the new one, and so
// that a private key is never readable by others even for a moment (the
// temporary file is created 0600 and an existing target's wider mode is not
// inherited).
func writeAtomic(path string, data []byte, perm os.FileMode) error {
	dir := filepath.Dir(path)
	f, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if err := f.Chmod(perm); err != nil {
		f.Close()
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("pki: write %s: %w", path, err)
	}
	return nil
}

func loadPair(certPath, keyPath string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: read certificate: %w", err)
	}
	b, _ := pem.Decode(certPEM)
	if b == nil || b.Type != pemCertificate {
		return nil, nil, fmt.Errorf("pki: %s holds no PEM certificate", certPath)
	}
	cert, err := x509.ParseCertificate(b.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: parse certificate in %s: %w", certPath, err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, nil, fmt.Errorf("pki: read private key: %w", err)
	}
	key, err := parseKey(keyPEM)
	if err != nil {
		// Never echo key material: name the file only.
		return nil, nil, fmt.Errorf("pki: private key in %s: %w", keyPath, err)
	}
	if !key.PublicKey.Equal(cert.PublicKey) {
		return nil, nil, fmt.Errorf("pki: private key in %s does not match certificate %s", keyPath, certPath)
	}
	return cert, key, nil
}

func parseKey(data []byte) (*ecdsa.PrivateKey, error) {
	b, _ := pem.Decode(data)
	if b == nil {
		return nil, errors.New("no PEM block")
	}
	switch b.Type {
	case pemPrivateKey:
		k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
		if err != nil {
			return nil, errors.New("malformed PKCS#8 key")
		}
		ek, ok := k.(*ecdsa.PrivateKey)
		if !ok {
			return nil, errors.New("not an ECDSA key")
		}
		return ek, nil
	case pemECKey:
		k, err := x509.ParseECPrivateKey(b.Bytes)
		if err != nil {
			return nil, errors.New("malformed EC key")
		}
		return k, nil
	}
	return nil, fmt.Errorf("unexpected PEM block %q", b.Type)
}
