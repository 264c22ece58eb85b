package pki

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
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
// accepts only peers of the same plane as cert: region nodes of cert's
// region for a region node, governance nodes for a governance node. A
// certificate that names neither accepts no peer at all.
func NodeTLSConfig(roots *x509.CertPool, cert tls.Certificate) *tls.Config {
	c := ServerTLSConfig(roots, cert)
	c.RootCAs = roots
	c.VerifyConnection = RequirePeer(PlaneOf(cert))
	return c
}

// PlaneOf returns the peers a node's certificate may talk to in its
// cluster: Identity{Kind: KindNode, Region: r} for a node of region r,
// Identity{Kind: KindGovernance} for a governance node, and the zero
// Identity (which Check refuses for every peer) for anything else.
func PlaneOf(cert tls.Certificate) Identity {
	id, err := LeafIdentity(cert)
	if err != nil {
		return Identity{}
	}
	switch id.Kind {
	case KindNode:
		return Identity{Kind: KindNode, Region: id.Region}
	case KindGovernance:
		return Identity{Kind: KindGovernance}
	}
	return Identity{}
}

// LeafIdentity returns the identity cert's leaf names (parsing the leaf if
// cert.Leaf is not set).
func LeafIdentity(cert tls.Certificate) (Identity, error) {
	leaf := cert.Leaf
	if leaf == nil {
		if len(cert.Certificate) == 0 {
			return Identity{}, ErrNoIdentity
		}
		var err error
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return Identity{}, fmt.Errorf("pki: parse certificate: %w", err)
		}
	}
	return IdentityFromCertificate(leaf)
}
