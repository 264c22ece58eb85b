// Package pki is Krypton's small public-key infrastructure: a development
// certificate authority, the certificates it issues to region nodes,
// governance nodes, gateways, calling services and operators, the Identity
// each certificate names, and the tls.Config values every Krypton listener
// and dialer uses.
//
// Every principal is named by exactly one SPIFFE URI SAN in the trust
// domain "krypton", one kind per role:
//
//	spiffe://krypton/region/<region>/node/<node-id>     a region's node
//	spiffe://krypton/governance/node/<node-id>          a governance node
//	spiffe://krypton/tenant/<tenant>/gateway/<name>     a gateway (server only)
//	spiffe://krypton/tenant/<tenant>/service/<service>  a calling service
//	spiffe://krypton/operator/<name>                    an operator
//
// No kind is accepted where another is expected. The region-less
// spiffe://krypton/node/<id> of earlier releases is refused (ErrLegacyNode).
// Servers and clients alike check the peer with RequirePeer: its kind and,
// where known, its region, node ID or tenant.
//
// Names are 1-64 bytes of [a-z0-9._-] starting with [a-z0-9].
//
// Usage:
//
//	ca, err := pki.NewCA("krypton dev CA", 0)
//	node, err := ca.IssueNode("node-1", pki.NodeOptions{Region: "eu-1"})
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
