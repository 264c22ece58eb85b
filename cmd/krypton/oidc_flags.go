package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"strings"

	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/transport"
)

// OIDC for operators, on both sides.
//
// Server side: every server command that serves operator RPCs (krypton server, krypton governance
// server, krypton dev) declares oidcFlags and builds its verifier with oidcFlags.verifier:
//
//	var o oidcFlags
//	o.declare(fs)
//	...
//	v, err := o.verifier(log) // nil, nil without -oidc-issuer
//	if v != nil { defer v.Close() } // after the server has stopped
//	cfg.OIDC = v                    // -> transport.ServerConfig.OIDC
//
// Client side: operator commands take -token-file or KRYPTON_TOKEN (clientFlags in client.go).

// oidcFlags are the flags that let a server admit operators by OIDC bearer token.
type oidcFlags struct {
	issuer    string
	audience  string
	roleClaim string
	roleMap   roleMapFlag
	ca        string
}

// roleMapFlag accumulates role=value pairs, comma-separated and repeatable:
// -oidc-role-map admin=krypton-admins,viewer=auditors. A claim value cannot contain a comma (an
// LDAP-style group DN): map the group's id instead, which IdPs offer for that reason.
type roleMapFlag struct{ pairs []string }

func (r *roleMapFlag) String() string { return strings.Join(r.pairs, ",") }

func (r *roleMapFlag) Set(v string) error {
	for p := range strings.SplitSeq(v, ",") {
		p = strings.TrimSpace(p)
		if p == "" {
			continue
		}
		role, value, ok := strings.Cut(p, "=")
		if !ok || value == "" {
			return fmt.Errorf("%q: want role=claim-value (admin=krypton-admins)", p)
		}
		if _, err := transport.ParseRole(role); err != nil {
			return fmt.Errorf("%q: unknown role %q (want admin or viewer)", p, role)
		}
		r.pairs = append(r.pairs, p)
	}
	return nil
}

// roles returns the map from claim value to role, refusing a value mapped to two roles.
func (r *roleMapFlag) roles() (map[string]transport.Role, error) {
	m := map[string]transport.Role{}
	for _, p := range r.pairs {
		role, value, _ := strings.Cut(p, "=")
		if old, ok := m[value]; ok && old != transport.Role(role) {
			return nil, usagef("-oidc-role-map: %q is mapped to both %s and %s", value, old, role)
		}
		m[value] = transport.Role(role)
	}
	return m, nil
}

// declare adds -oidc-issuer, -oidc-audience, -oidc-role-claim, -oidc-role-map and -oidc-ca to fs.
func (f *oidcFlags) declare(fs *flag.FlagSet) {
	fs.StringVar(&f.issuer, "oidc-issuer", "", "OIDC issuer URL (https) whose bearer tokens operators may use instead of operator certificates; empty: certificates only (see docs/identity.md)")
	fs.StringVar(&f.audience, "oidc-audience", "", "the audience (\"aud\") tokens must carry: the OAuth client id of the Krypton CLI, or the API identifier")
	fs.StringVar(&f.roleClaim, "oidc-role-claim", "groups", "the token claim holding the caller's roles or groups (\"roles\", \"groups\", \"realm_access.roles\")")
	fs.Var(&f.roleMap, "oidc-role-map", "claim values that grant Krypton roles, as role=value pairs: admin=krypton-admins,viewer=krypton-auditors (repeatable)")
	fs.StringVar(&f.ca, "oidc-ca", "", "PEM file of the CA(s) that sign the issuer's HTTPS certificate; empty: the system's")
}

// config returns the verifier configuration, ok false when -oidc-issuer is empty. It names the
// flag at fault.
func (f *oidcFlags) config(log *slog.Logger) (cfg transport.OIDCConfig, ok bool, err error) {
	if f.issuer == "" {
		if f.audience != "" || len(f.roleMap.pairs) > 0 || f.ca != "" {
			return cfg, false, usagef("-oidc-audience, -oidc-role-map and -oidc-ca need -oidc-issuer")
		}
		return cfg, false, nil
	}
	if f.audience == "" {
		return cfg, false, usagef("-oidc-issuer needs -oidc-audience (the client id tokens are issued for)")
	}
	if len(f.roleMap.pairs) == 0 {
		return cfg, false, usagef("-oidc-issuer needs -oidc-role-map (which claim values grant admin or viewer)")
	}
	roles, err := f.roleMap.roles()
	if err != nil {
		return cfg, false, err
	}
	cfg = transport.OIDCConfig{Issuer: f.issuer, Audience: f.audience, RoleClaim: f.roleClaim, RoleMap: roles, Logger: log}
	if f.ca != "" {
		if cfg.Roots, err = pki.LoadCertPool(f.ca); err != nil {
			return cfg, false, fmt.Errorf("-oidc-ca: %w", err)
		}
	}
	if err := cfg.Validate(); err != nil {
		return cfg, false, usagef("-oidc-*: %v", err)
	}
	return cfg, true, nil
}

// verifier returns the OIDC verifier the flags describe, or nil without -oidc-issuer. It does no
// network I/O (the issuer is discovered on the first token), so a node starts while its IdP is
// down. The caller closes it after its server has stopped.
func (f *oidcFlags) verifier(log *slog.Logger) (*transport.OIDCVerifier, error) {
	cfg, ok, err := f.config(log)
	if err != nil || !ok {
		return nil, err
	}
	return transport.NewOIDCVerifier(cfg)
}

// token returns the bearer token source the flags name: -token-file, else KRYPTON_TOKEN, else
// (with no client certificate) the token `krypton login` cached; nil if none (operator commands only).
func (c *clientFlags) token() transport.TokenSource {
	if c.kind != pki.KindOperator {
		return nil
	}
	if c.tokenFile != "" {
		return transport.TokenFile(c.tokenFile)
	}
	if tok := strings.TrimSpace(os.Getenv("KRYPTON_TOKEN")); tok != "" {
		return transport.StaticToken(tok)
	}
	if c.clientCert == "" && c.clientKey == "" {
		if l := loginCacheSource(); l != nil {
			return l
		}
	}
	return nil
}

// loadTokenConfig is loadConfig for an operator command with a bearer token and no client
// certificate: the CA is still needed, to verify the server.
func (c *clientFlags) loadTokenConfig(tok transport.TokenSource) (transport.ClientConfig, error) {
	if c.caCert == "" {
		return transport.ClientConfig{}, usagef("-ca-cert is required (or set KRYPTON_CA_CERT): the CA that signed the server's certificate")
	}
	if _, err := tok.Token(context.Background()); err != nil {
		if _, ok := tok.(*cachedLogin); ok {
			return transport.ClientConfig{}, err // it names the cache and the fix
		}
		return transport.ClientConfig{}, fmt.Errorf("-token-file: %w", err)
	}
	roots, err := pki.LoadCertPool(c.caCert)
	if err != nil {
		return transport.ClientConfig{}, fmt.Errorf("-ca-cert: %w", err)
	}
	return transport.ClientConfig{Roots: roots, Token: tok}, nil
}
