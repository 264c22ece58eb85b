// Package transport carries Krypton's gRPC API (package krypton.v1, generated
// into transport/kryptonv1) over the network: servers and clients with
// mutually authenticated TLS, the interceptors for panics, metrics,
// identity, authorisation, errors and audit, gRPC health checking, the
// request limits handlers check first, the Prometheus admin endpoint, and
// the one table that maps domain errors to gRPC status codes.
//
// # Servers
//
// NewServer returns a *Server (an embedded *grpc.Server plus its health
// service) that requires a client certificate chaining to the configured
// CA: a client without one, or with one from another CA, fails the TLS
// handshake, which the client sees as codes.Unavailable (no call ever
// reaches the server). Messages are bounded at 8 MiB (DefaultMaxMsgSize), so
// a maximal batch fits and a larger request fails with ResourceExhausted
// before it is decoded. The interceptor chain, outermost first: panic
// recovery, metrics, identity, audit, authorisation, error translation (see
// NewServer).
//
// # Identity and authorisation
//
// Identity comes only from the peer's verified certificate (package
// internal/pki): node certificates name a node ID, callers' certificates a
// tenant and service (a SPIFFE URI SAN), operators' certificates an
// operator. Handlers read it with IdentityFromContext. A Policy admits kinds
// of certificate per gRPC service (DefaultPolicy: WrapService for service
// certificates, AdminService for operators, NodeService for nodes,
// GovernanceService for operators and nodes, health for all); a call without
// a Krypton identity fails with codes.Unauthenticated, one of the wrong kind
// with codes.PermissionDenied. Finer checks are the handlers': whether the
// caller may use a key is the tenant's key-use policy (package policy: the
// default rule, a service uses exactly its own tenant and service, or the
// rules governance set), which the region's wrap handlers and the gateway
// check; AuthorizeNode checks that the node_id of a NodeService request is
// the caller's.
//
// # Operators with OIDC bearer tokens
//
// A server made with ServerConfig.OIDC (an OIDCVerifier for one issuer,
// audience, role claim and role map) also admits operators who present an
// OIDC bearer token ("authorization: Bearer <JWT>") instead of an operator
// certificate. The token is checked against the issuer's published keys
// (discovered on first use, refetched on an unknown key id), its iss, aud,
// exp and nbf; its role claim maps to RoleAdmin (everything an operator
// certificate may do) or RoleViewer (the read-only RPCs). TokenMethods is
// the one table of which RPC needs which role; RPCs outside it (the wrap
// and node services, governance's feed) refuse every token. Such a server
// accepts TLS connections without a client certificate, but a call on one
// is admitted only with a valid token. Handlers see the token's holder as a
// KindOperator pki.Identity with Issuer set (oidc:<issuer>#<subject>);
// TokenFromContext gives its roles. Clients send a token with
// ClientConfig.Token (StaticToken, TokenFile). See docs/identity.md.
//
// # Errors
//
// ToStatus turns any error into a status for the wire. The table (etcd's
// toGRPCErrorMap is the model) maps the sentinels of wrap, fsm, anchor and
// pki and the context errors with errors.Is, as docs/api.md lists:
// InvalidArgument for malformed input and a blob that does not
// authenticate, NotFound, AlreadyExists, FailedPrecondition for revoked keys,
// locked tenants and anchor denials, Unavailable for what a retry may cure,
// Aborted for races. Errors that carry a status already pass through: a
// plane's own errors are CodedErrors (Coded, and Invalid for an
// InvalidArgument refusal that names the fix), region's and governance's
// alike. Anything else becomes codes.Internal with a generic message, and
// its detail goes to the log. Every wire message is a fixed string of the
// table (plus, for fsm errors, the validated names they concern): none
// carries key material or echoes request bytes. Clients act on the code and
// never rebuild a domain error from a status message. A server adds rows for
// sentinels this package does not link with ServerConfig.Errors: governance
// maps its state machine's (package governance/govfsm) so. The refusals both
// state machines make (internal/staterr) have one row each, for both planes,
// whose message is the text of the plane's own sentinel.
//
// # Requests
//
// Every plane checks a write's request_id with CheckRequestID and reads a
// List request's page_size and page_token with Page (its next_page_token from
// NextPageToken), so that region, governance and gateway speak one dialect
// (docs/api.md, "Idempotency" and "Pagination"); their refusals are rows of
// the table (InvalidArgument).
//
// # Clients
//
// Dial connects with mutual TLS, keepalive and the servers' message limits;
// LoadClientConfig reads the CA, certificate and key files `krypton certs`
// writes.
//
// Example, a region node serving the wrap service:
//
//	reg := prometheus.NewRegistry()
//	m, err := transport.NewMetrics(reg)
//	srv, err := transport.NewServer(transport.ServerConfig{
//		Roots:       roots,             // pki.LoadCertPool("ca.pem")
//		Certificate: node.TLSCertificate(),
//		Metrics:     m,
//		Audit:       auditRefusal,     // func(ctx, method, id, code)
//		Logger:      logger,
//	})
//	kryptonv1.RegisterWrapServiceServer(srv, wrapService)
//	srv.SetServing(transport.WrapService, leaseHeld)
//	go srv.Serve(apiListener)
//	admin, err := transport.ServeAdminHTTP(adminListener, transport.AdminHTTPConfig{Gatherer: reg, Registerer: reg})
//	...
//	srv.Shutdown(ctx)
//	admin.Shutdown(ctx)
//
// and its handler, checking before touching a key:
//
//	func (s *wrapService) Wrap(ctx context.Context, req *kryptonv1.WrapRequest) (*kryptonv1.WrapResponse, error) {
//		id, _ := transport.IdentityFromContext(ctx) // the interceptor admitted only service certificates
//		key := req.GetKey()
//		if !s.policies.get(key.GetTenant()).Permits(id.Tenant, id.Service, key.GetTenant(), key.GetService(), policy.Wrap) {
//			return nil, status.Error(codes.PermissionDenied, "refused by the tenant's policy")
//		}
//		if err := transport.CheckPlaintext(req.Plaintext); err != nil {
//			return nil, err
//		}
//		...
//		return resp, err // a domain error: the server maps it with ToStatus
//	}
//
// A client:
//
//	cfg, err := transport.LoadClientConfig("ca.pem", "payments.pem", "payments-key.pem")
//	conn, err := transport.Dial(ctx, "10.0.0.1:7400", cfg)
//	defer conn.Close()
//	resp, err := kryptonv1.NewWrapServiceClient(conn).Wrap(ctx, req)
//
// Regions, governance, gateways, the CLI and the chaos harness import this
// package; it imports none of them.
package transport
