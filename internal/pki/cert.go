package pki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"net"
	"net/url"
	"time"
)

// Certificate is an issued leaf certificate with its private key.
type Certificate struct {
	leaf *x509.Certificate
	key  *ecdsa.PrivateKey
}

// Leaf returns the parsed certificate.
func (c *Certificate) Leaf() *x509.Certificate { return c.leaf }

// Identity returns the Krypton identity the certificate names.
func (c *Certificate) Identity() (Identity, error) { return IdentityFromCertificate(c.leaf) }

// TLSCertificate returns the certificate and key for a tls.Config.
func (c *Certificate) TLSCertificate() tls.Certificate {
	return tls.Certificate{
		Certificate: [][]byte{c.leaf.Raw},
		PrivateKey:  c.key,
		Leaf:        c.leaf,
	}
}

// CertPEM returns the certificate in PEM form.
func (c *Certificate) CertPEM() []byte { return encodeCertPEM(c.leaf.Raw) }

// NodeOptions adds names to a node's (or a gateway's) server certificate
// beyond the defaults (DNS localhost and IP 127.0.0.1), and overrides its
// lifetime.
type NodeOptions struct {
	// DNSNames are extra DNS SANs, e.g. the host name peers dial.
	DNSNames []string
	// IPs are extra IP SANs, e.g. the address peers dial.
	IPs []net.IP
	// Lifetime of the certificate; 0 means NodeLifetime.
	Lifetime time.Duration
	// Region names the region the node belongs to: required by IssueNode
	// (spiffe://krypton/region/<region>/node/<id>), refused by
	// IssueGovernance and IssueGateway.
	Region string
}

// ErrNoRegion is returned by IssueNode without NodeOptions.Region.
var ErrNoRegion = fmt.Errorf("%w: a region node's certificate must name its region "+
	"(krypton certs node -region R); a governance node's is issued by krypton certs governance", ErrInvalidIdentity)

// IssueNode issues a certificate for node id of region opts.Region
// (required), usable as TLS server and client, naming
// spiffe://krypton/region/<region>/node/<id>.
func (ca *CA) IssueNode(id string, opts NodeOptions) (*Certificate, error) {
	if opts.Region == "" {
		return nil, ErrNoRegion
	}
	ident := Identity{Kind: KindNode, NodeID: id, Region: opts.Region}
	return ca.issueServer(ident, "node "+opts.Region+"/"+id, opts, true)
}

// IssueGovernance issues a certificate for governance node id, usable as
// TLS server and client, naming spiffe://krypton/governance/node/<id>.
func (ca *CA) IssueGovernance(id string, opts NodeOptions) (*Certificate, error) {
	if opts.Region != "" {
		return nil, fmt.Errorf("%w: a governance node belongs to no region", ErrInvalidIdentity)
	}
	return ca.issueServer(Identity{Kind: KindGovernance, NodeID: id}, "governance node "+id, opts, true)
}

// IssueGateway issues the server certificate of gateway name of tenant,
// naming spiffe://krypton/tenant/<tenant>/gateway/<name>: what the
// gateway's gRPC and KMIP front ends present to the tenant's services. It
// is a server certificate only (no client authentication): the gateway
// calls the region with a service certificate of its tenant, and no
// listener of a node accepts a gateway's certificate.
func (ca *CA) IssueGateway(tenant, name string, opts NodeOptions) (*Certificate, error) {
	if opts.Region != "" {
		return nil, fmt.Errorf("%w: a gateway's certificate names its tenant, not a region", ErrInvalidIdentity)
	}
	return ca.issueServer(Identity{Kind: KindGateway, Tenant: tenant, Gateway: name},
		"gateway "+tenant+"/"+name, opts, false)
}

func (ca *CA) issueServer(ident Identity, cn string, opts NodeOptions, client bool) (*Certificate, error) {
	if err := ident.validate(); err != nil {
		return nil, err
	}
	lifetime := opts.Lifetime
	if lifetime <= 0 {
		lifetime = NodeLifetime
	}
	dns := append([]string{"localhost"}, opts.DNSNames...)
	ips := append([]net.IP{net.IPv4(127, 0, 0, 1)}, opts.IPs...)
	eku := []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}
	if client {
		eku = append(eku, x509.ExtKeyUsageClientAuth)
	}
	return ca.issue(ident, cn, dns, ips, lifetime, eku)
}

// IssueService issues a client certificate for a calling service,
// naming spiffe://krypton/tenant/<tenant>/service/<service>. A lifetime of
// 0 means ServiceLifetime.
func (ca *CA) IssueService(tenant, service string, lifetime time.Duration) (*Certificate, error) {
	ident := Identity{Kind: KindService, Tenant: tenant, Service: service}
	if err := ident.validate(); err != nil {
		return nil, err
	}
	if lifetime <= 0 {
		lifetime = ServiceLifetime
	}
	return ca.issue(ident, "service "+tenant+"/"+service, nil, nil, lifetime,
		[]x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth})
}

// IssueOperator issues a client certificate for a human operator,
// naming spiffe://krypton/operator/<name>. A lifetime of 0 means
// OperatorLifetime.
func (ca *CA) IssueOperator(name string, lifetime time.Duration) (*Certificate, error) {
	ident := Identity{Kind: KindOperator, Operator: name}
	if err := ident.validate(); err != nil {
		return nil, err
	}
	if lifetime <= 0 {
		lifetime = OperatorLifetime
	}
	return ca.issue(ident, "operator "+name, nil, nil, lifetime,
		[]x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth})
}

func (ca *CA) issue(ident Identity, cn string, dns []string, ips []net.IP, lifetime time.Duration, eku []x509.ExtKeyUsage) (*Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("pki: generate key: %w", err)
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
	notAfter := now.Add(lifetime)
	if notAfter.After(ca.cert.NotAfter) {
		// A leaf that outlives its CA would fail verification anyway;
		// say so at issue time instead of at the first handshake.
		notAfter = ca.cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: cn, Organization: []string{"Krypton"}},
		NotBefore:    now.Add(-clockSkew),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  eku,
		DNSNames:     dns,
		IPAddresses:  ips,
		URIs:         []*url.URL{ident.URI()},
		SubjectKeyId: skid,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return nil, fmt.Errorf("pki: create certificate: %w", err)
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: parse certificate: %w", err)
	}
	return &Certificate{leaf: leaf, key: key}, nil
}
