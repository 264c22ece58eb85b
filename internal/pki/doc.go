// Package pki is Krypton's small public-key infrastructure: a development
// certificate authority, the certificates it issues to nodes, calling
// services and operators, the Identity each certificate names, and the
// tls.Config values every Krypton listener and dialer uses.
//
// Every principal is named by exactly one SPIFFE URI SAN in the trust
// domain "krypton":
//
//	spiffe://krypton/node/<node-id>
//	spiffe://krypton/region/<region>/node/<node-id>
//	spiffe://krypton/tenant/<tenant>/service/<service>
//	spiffe://krypton/operator/<name>
//
// Names are 1-64 bytes of [a-z0-9._-] starting with [a-z0-9].
//
// Usage:
//
//	ca, err := pki.NewCA("krypton dev CA", 0)
//	node, err := ca.IssueNode("node-1", pki.NodeOptions{})
//	err = ca.WriteFiles("ca.pem", "ca-key.pem")
//	err = node.WriteFiles("node-1.pem", "node-1-key.pem")
//
//	cfg := pki.NodeTLSConfig(ca.Pool(), node.TLSCertificate())
//	// ... after a handshake on a server configured with ServerTLSConfig:
//	id, err := pki.PeerIdentity(conn.ConnectionState())
//	if err == nil && id.Kind == pki.KindService { use(id.Tenant, id.Service) }
//
// The CA is meant for development (krypton dev, krypton certs) and tests;
// a production deployment may bring certificates from its own CA as long as
// they carry the URIs above.
package pki
