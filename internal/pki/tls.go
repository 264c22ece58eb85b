package pki

import (
	"crypto/tls"
	"crypto/x509"
)

// ServerTLSConfig returns a server configuration that presents cert and
// requires every client to present a certificate chaining to roots. TLS 1.3
// is the minimum: every Krypton peer is Krypton software, so there is no
// legacy client to accommodate. Callers that accept only some kinds of peer
// set VerifyConnection, e.g. to RequireKind(KindService).
func ServerTLSConfig(roots *x509.CertPool, cert tls.Certificate) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		ClientCAs:    roots,
		ClientAuth:   tls.RequireAndVerifyClientCert,
	}
}

// ClientTLSConfig returns a client configuration that presents cert and
// verifies the server's chain against roots and its name against
// serverName (empty: the host dialled, as crypto/tls does by default).
func ClientTLSConfig(roots *x509.CertPool, cert tls.Certificate, serverName string) *tls.Config {
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{cert},
		RootCAs:      roots,
		ServerName:   serverName,
	}
}

// NodeTLSConfig returns a configuration usable on both ends of a
// node-to-node connection (package cluster listens and dials with it): it
// presents the node's certificate, requires and verifies the peer's, and
// accepts only peers whose certificate names a node.
func NodeTLSConfig(roots *x509.CertPool, cert tls.Certificate) *tls.Config {
	c := ServerTLSConfig(roots, cert)
	c.RootCAs = roots
	c.VerifyConnection = RequireKind(KindNode)
	return c
}
