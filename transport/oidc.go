package transport

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/time/rate"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/internal/pki"
)

// Role is what an operator authenticated by an OIDC bearer token may do.
// Operators authenticated by an operator certificate have every role.
type Role string

// Roles, from most to least powerful. RoleAdmin may call every operator RPC
// an operator certificate may call; RoleViewer only the read-only ones
// (TokenMethods says which).
const (
	RoleAdmin  Role = "admin"
	RoleViewer Role = "viewer"
)

// allows reports whether a holder of r may call a method that needs need.
func (r Role) allows(need Role) bool {
	switch r {
	case RoleAdmin:
		return need == RoleAdmin || need == RoleViewer
	case RoleViewer:
		return need == RoleViewer
	}
	return false
}

// ParseRole returns the Role named s ("admin" or "viewer").
func ParseRole(s string) (Role, error) {
	switch r := Role(s); r {
	case RoleAdmin, RoleViewer:
		return r, nil
	}
	return "", fmt.Errorf("transport: unknown role %q (want admin or viewer)", s)
}

// MaxTokenSize bounds a bearer token, in bytes. Real ID and access tokens
// are a few kilobytes; a larger one is refused before it is parsed.
const MaxTokenSize = 16 << 10

// defaultSigningAlgs are the JWS algorithms accepted by default: asymmetric
// only. An HMAC algorithm (HS256) would let anyone holding the shared
// secret, such as another relying party of the IdP, forge tokens; "none" is
// never accepted (go-jose refuses unsigned tokens outright).
var defaultSigningAlgs = []string{
	oidc.RS256, oidc.RS384, oidc.RS512,
	oidc.ES256, oidc.ES384, oidc.ES512,
	oidc.PS256, oidc.PS384, oidc.PS512,
	oidc.EdDSA,
}

// OIDCConfig configures NewOIDCVerifier. Issuer, Audience, RoleClaim and
// RoleMap are required.
type OIDCConfig struct {
	// Issuer is the issuer URL, exactly as the IdP's tokens carry it in
	// "iss" and its discovery document in "issuer" (for example
	// https://idp.example.com/realms/ops). It must be https: the keys that
	// sign tokens are fetched from it. Its discovery document is read on
	// the first token, not when the verifier is made, so that a node starts
	// (and serves wraps) while the IdP is down.
	Issuer string
	// Audience is the value the token's "aud" must contain: the OAuth
	// client id of the Krypton CLI for ID tokens, or the API identifier for
	// JWT access tokens.
	Audience string
	// RoleClaim names the claim that carries the caller's roles or groups
	// ("roles", "groups", "cognito:groups", "https://example.com/roles").
	// A name that is not a top-level claim and contains dots is followed as
	// a path into nested objects ("realm_access.roles" for Keycloak). The
	// claim may be a string or an array of strings.
	RoleClaim string
	// RoleMap maps a claim value to the Krypton role it grants. Values not
	// in the map grant nothing; a token that maps to no role is
	// authenticated but may call nothing (PermissionDenied).
	RoleMap map[string]Role
	// SigningAlgs are the JWS algorithms accepted; nil means RS*, ES*, PS*
	// and EdDSA. HMAC algorithms are refused by Validate.
	SigningAlgs []string
	// Roots are the CAs trusted for the issuer's HTTPS certificate; nil
	// means the system pool.
	Roots *x509.CertPool
	// IssuerRefreshInterval is how often, at most, the verifier asks the
	// issuer for its discovery document or keys once a burst of four is
	// spent; 0 means 10 s. A new signing key at the IdP is picked up with
	// the first token that uses it, within this limit.
	IssuerRefreshInterval time.Duration
	// Logger receives why tokens were refused (never the token); nil
	// discards.
	Logger *slog.Logger
}

// Validate names the first unusable field.
func (c OIDCConfig) Validate() error {
	u, err := url.Parse(c.Issuer)
	switch {
	case c.Issuer == "":
		return errors.New("transport: OIDCConfig.Issuer is required")
	case err != nil || u.Scheme != "https" || u.Host == "":
		return errors.New("transport: OIDCConfig.Issuer must be an https URL")
	case c.Audience == "":
		return errors.New("transport: OIDCConfig.Audience is required")
	case c.RoleClaim == "":
		return errors.New("transport: OIDCConfig.RoleClaim is required")
	case c.IssuerRefreshInterval < 0:
		return errors.New("transport: OIDCConfig.IssuerRefreshInterval is negative")
	case len(c.RoleMap) == 0:
		return errors.New("transport: OIDCConfig.RoleMap is required (which claim values grant admin or viewer)")
	}
	for v, r := range c.RoleMap {
		if v == "" {
			return errors.New("transport: OIDCConfig.RoleMap has an empty claim value")
		}
		if _, err := ParseRole(string(r)); err != nil {
			return fmt.Errorf("transport: OIDCConfig.RoleMap: %w", err)
		}
	}
	for _, a := range c.SigningAlgs {
		if !slices.Contains(defaultSigningAlgs, a) {
			return fmt.Errorf("transport: OIDCConfig.SigningAlgs: %q is not an asymmetric JWS algorithm", a)
		}
	}
	return nil
}

// OIDCVerifier checks OIDC bearer tokens (JWTs) against one issuer: the
// signature with the issuer's published keys (refetched when a token names a
// key id it has not seen, so that key rotation at the IdP needs nothing
// here), "iss", "aud", "exp" and "nbf" (with go-oidc's five-minute leeway
// for clock skew), and a non-empty "sub". It then maps RoleClaim to roles.
//
// It is safe for concurrent use. Close releases its idle HTTP connections.
type OIDCVerifier struct {
	cfg    OIDCConfig
	log    *slog.Logger
	client *http.Client

	sem chan struct{} // one discovery at a time; guards verifier
	// verifier is nil until discovery succeeds.
	verifier *oidc.IDTokenVerifier
}

// NewOIDCVerifier returns a verifier for cfg. It does no I/O: the issuer's
// discovery document is fetched on the first token and retried on later
// ones until it succeeds.
func NewOIDCVerifier(cfg OIDCConfig) (*OIDCVerifier, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if cfg.SigningAlgs == nil {
		cfg.SigningAlgs = defaultSigningAlgs
	}
	tr := &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		TLSClientConfig:     &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: cfg.Roots},
		TLSHandshakeTimeout: 10 * time.Second,
		MaxIdleConnsPerHost: 2,
		IdleConnTimeout:     90 * time.Second,
	}
	// Every token with a key id the verifier has not cached, or a bad
	// signature, makes go-oidc fetch the JWKS again: without a limit, anyone
	// who can open a TLS connection could make every node hammer the IdP.
	// Requests to the issuer are therefore rate-limited (a burst for
	// discovery, the first JWKS and a rotation; then one per
	// IssuerRefreshInterval); a token that needs a fetch beyond the limit is
	// refused as invalid and its holder retries.
	every := cfg.IssuerRefreshInterval
	if every == 0 {
		every = 10 * time.Second
	}
	lim := rate.NewLimiter(rate.Every(every), 4)
	return &OIDCVerifier{
		cfg:    cfg,
		log:    orDiscard(cfg.Logger),
		client: &http.Client{Transport: limitedTransport{tr, lim}, Timeout: 30 * time.Second},
		sem:    make(chan struct{}, 1),
	}, nil
}

// limitedTransport refuses requests beyond its limiter's rate.
type limitedTransport struct {
	*http.Transport
	lim *rate.Limiter
}

// errIssuerRateLimited is what a request to the issuer fails with beyond
// the limit.
var errIssuerRateLimited = errors.New("transport: requests to the OIDC issuer rate-limited")

func (t limitedTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	if !t.lim.Allow() {
		return nil, errIssuerRateLimited
	}
	return t.Transport.RoundTrip(req)
}

// Close closes the verifier's idle connections to the issuer. A verifier
// may still be used after Close (it reconnects); Close is for shutdown.
// Close on a nil verifier does nothing.
func (v *OIDCVerifier) Close() {
	if v == nil {
		return
	}
	v.client.CloseIdleConnections()
}

// Errors of Verify; the server maps them to Unauthenticated (invalid,
// expired), PermissionDenied (no role) and Unavailable (issuer unreachable).
var (
	// ErrTokenInvalid is returned when a bearer token is malformed, not
	// signed by the issuer's keys, or not for this issuer or audience.
	ErrTokenInvalid = errors.New("transport: bearer token not valid for this server")
	// ErrTokenExpired is returned when a bearer token's "exp" has passed.
	ErrTokenExpired = errors.New("transport: bearer token expired")
	// ErrIssuerUnavailable is returned when the issuer's discovery document
	// cannot be read.
	ErrIssuerUnavailable = errors.New("transport: OIDC issuer unreachable")
)

// TokenIdentity is what a verified bearer token says about its holder.
type TokenIdentity struct {
	// Issuer and Subject are the token's "iss" and "sub".
	Issuer  string
	Subject string
	// Roles are the Krypton roles its RoleClaim maps to, sorted, without
	// duplicates; empty if none.
	Roles []Role
	// Expiry is the token's "exp".
	Expiry time.Time
}

// Identity returns the pki.Identity handlers see for the token's holder: an
// operator named by the token's subject and issuer.
func (t TokenIdentity) Identity() pki.Identity {
	return pki.Identity{Kind: pki.KindOperator, Operator: t.Subject, Issuer: t.Issuer}
}

// Has reports whether the token grants need (RoleAdmin grants RoleViewer).
func (t TokenIdentity) Has(need Role) bool {
	for _, r := range t.Roles {
		if r.allows(need) {
			return true
		}
	}
	return false
}

// idTokenVerifier returns the go-oidc verifier, discovering the issuer if
// that has not succeeded yet.
func (v *OIDCVerifier) idTokenVerifier(ctx context.Context) (*oidc.IDTokenVerifier, error) {
	select {
	case v.sem <- struct{}{}:
	case <-ctx.Done():
		return nil, ErrIssuerUnavailable
	}
	defer func() { <-v.sem }()
	if v.verifier != nil {
		return v.verifier, nil
	}
	// The provider keeps the client (not ctx) for its later JWKS fetches.
	p, err := oidc.NewProvider(oidc.ClientContext(ctx, v.client), v.cfg.Issuer)
	if err != nil {
		v.log.Warn("transport: OIDC discovery failed", "issuer", v.cfg.Issuer, "err", err)
		return nil, ErrIssuerUnavailable
	}
	v.verifier = p.Verifier(&oidc.Config{
		ClientID:             v.cfg.Audience,
		SupportedSigningAlgs: v.cfg.SigningAlgs,
	})
	return v.verifier, nil
}

// Verify checks raw (a compact JWS, without "Bearer ") and returns its
// holder's identity and roles. A token that maps to no role is returned
// without error: it is authenticated, and authorisation refuses it.
func (v *OIDCVerifier) Verify(ctx context.Context, raw string) (TokenIdentity, error) {
	if raw == "" || len(raw) > MaxTokenSize {
		return TokenIdentity{}, ErrTokenInvalid
	}
	iv, err := v.idTokenVerifier(ctx)
	if err != nil {
		return TokenIdentity{}, err
	}
	tok, err := iv.Verify(ctx, raw)
	if err != nil {
		// go-oidc's messages name the issuer or audience the token carried,
		// never the token: safe for the log, too detailed for the caller.
		v.log.Info("transport: bearer token refused", "err", err)
		var exp *oidc.TokenExpiredError
		if errors.As(err, &exp) {
			return TokenIdentity{}, ErrTokenExpired
		}
		return TokenIdentity{}, ErrTokenInvalid
	}
	if tok.Subject == "" {
		v.log.Info("transport: bearer token refused", "err", "no sub claim")
		return TokenIdentity{}, ErrTokenInvalid
	}
	var claims map[string]any
	if err := tok.Claims(&claims); err != nil {
		return TokenIdentity{}, ErrTokenInvalid
	}
	return TokenIdentity{
		Issuer:  tok.Issuer,
		Subject: tok.Subject,
		Roles:   v.roles(claims),
		Expiry:  tok.Expiry,
	}, nil
}

// roles maps the role claim's values through RoleMap.
func (v *OIDCVerifier) roles(claims map[string]any) []Role {
	var roles []Role
	for _, s := range claimStrings(claims, v.cfg.RoleClaim) {
		if r, ok := v.cfg.RoleMap[s]; ok && !slices.Contains(roles, r) {
			roles = append(roles, r)
		}
	}
	slices.Sort(roles)
	return roles
}

// claimStrings returns the string values of claim name: a string, or the
// strings of an array. A name that is not a top-level claim is followed as
// a dotted path into nested objects.
func claimStrings(claims map[string]any, name string) []string {
	val, ok := claims[name]
	if !ok && strings.Contains(name, ".") {
		var cur any = claims
		for part := range strings.SplitSeq(name, ".") {
			m, isMap := cur.(map[string]any)
			if !isMap {
				return nil
			}
			cur = m[part]
		}
		val = cur
	}
	switch x := val.(type) {
	case string:
		return []string{x}
	case []any:
		var out []string
		for _, e := range x {
			if s, ok := e.(string); ok {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}

// bearerToken returns the token of the call's "authorization: Bearer ..."
// metadata, whether the call carried one, and an error for a malformed or
// repeated header.
func bearerToken(ctx context.Context) (string, bool, error) {
	// ValueFromIncomingContext copies only this header's values (none on a
	// certificate call), where FromIncomingContext copies all metadata.
	vals := metadata.ValueFromIncomingContext(ctx, "authorization")
	if len(vals) == 0 {
		return "", false, nil
	}
	if len(vals) > 1 {
		return "", true, status.Error(codes.Unauthenticated, "transport: more than one authorization header")
	}
	scheme, tok, ok := strings.Cut(vals[0], " ")
	if !ok || !strings.EqualFold(scheme, "bearer") || strings.TrimSpace(tok) == "" {
		return "", true, status.Error(codes.Unauthenticated, "transport: authorization is not a bearer token")
	}
	return strings.TrimSpace(tok), true, nil
}

// errNoTokens is the identity step's error for a bearer token sent to a
// server without an OIDC verifier.
var errNoTokens = status.Error(codes.Unauthenticated, "transport: this server does not accept bearer tokens")

// tokenStatus maps the verifier's errors for the wire.
func tokenStatus(err error) error {
	switch {
	case errors.Is(err, ErrTokenExpired):
		return status.Error(codes.Unauthenticated, ErrTokenExpired.Error())
	case errors.Is(err, ErrIssuerUnavailable):
		return status.Error(codes.Unavailable, ErrIssuerUnavailable.Error())
	case status.Code(err) != codes.Unknown:
		return err
	}
	return status.Error(codes.Unauthenticated, ErrTokenInvalid.Error())
}

// identify finds the call's identity: from its bearer token if it carries
// one (the token decides, whatever certificate the connection has), else
// from the connection's verified client certificate.
func (ic *interceptors) identify(ctx context.Context) (context.Context, *identityResult) {
	raw, has, err := bearerToken(ctx)
	if !has {
		return withIdentity(ctx)
	}
	r := &identityResult{}
	switch {
	case err != nil:
		r.err = err
	case ic.tokens == nil:
		r.err = errNoTokens
	default:
		tok, verr := ic.tokens.Verify(ctx, raw)
		if verr != nil {
			r.err = tokenStatus(verr)
		} else {
			r.id, r.token = tok.Identity(), &tok
		}
	}
	return context.WithValue(ctx, identityKey{}, r), r
}

// authorizeToken applies the bearer-token rule to a call whose identity
// came from a verified token: only the methods of TokenMethods, and only
// with a role that allows them.
func authorizeToken(fullMethod string, tok *TokenIdentity) error {
	need, ok := TokenMethods[fullMethod]
	if !ok {
		return status.Error(codes.PermissionDenied, "transport: bearer tokens are accepted only for operator calls; this call needs a certificate")
	}
	if !tok.Has(need) {
		return status.Errorf(codes.PermissionDenied, "transport: the token grants no role allowed to call this method (needs %s)", need)
	}
	return nil
}

// TokenFromContext returns the verified bearer token identity of the call
// whose context ctx is, if the caller was authenticated by a token rather
// than a certificate.
func TokenFromContext(ctx context.Context) (TokenIdentity, bool) {
	r, ok := ctx.Value(identityKey{}).(*identityResult)
	if !ok || r.err != nil || r.token == nil {
		return TokenIdentity{}, false
	}
	return *r.token, true
}
