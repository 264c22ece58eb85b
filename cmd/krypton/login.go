// `krypton login` and `krypton logout`: an operator's OIDC token by the device authorization flow
// (RFC 8628), cached for the operator commands.

package main

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/kryptonkms/krypton/internal/pki"
)

// The device flow, discovery and refresh are golang.org/x/oauth2's (DeviceAuth,
// DeviceAccessToken, TokenSource) and go-oidc's (discovery, ID token verification); this file
// only adds the cache and the wiring.

// loginCacheFile is the name of the cache under os.UserConfigDir()/krypton/.
const loginCacheFile = "token.json"

// loginRefreshMargin: a cached token that expires sooner than this is refreshed before use.
const loginRefreshMargin = time.Minute

// loginCache is the cache file's content: what a later command needs to send the ID token and to
// refresh it. It holds a bearer token and a refresh token, so it is written 0600.
type loginCache struct {
	Issuer        string    `json:"issuer"`
	ClientID      string    `json:"client_id"`
	Scopes        []string  `json:"scopes"`
	IssuerCA      string    `json:"issuer_ca,omitempty"` // -oidc-ca at login, an absolute path
	TokenEndpoint string    `json:"token_endpoint"`
	Subject       string    `json:"subject"`
	IDToken       string    `json:"id_token"`
	RefreshToken  string    `json:"refresh_token,omitempty"`
	Expiry        time.Time `json:"expiry"` // the ID token's "exp"
}

// loginCachePath is os.UserConfigDir()/krypton/token.json.
func loginCachePath() (string, error) {
	dir, err := os.UserConfigDir()
	if err != nil {
		return "", fmt.Errorf("finding the login token cache: %w", err)
	}
	return filepath.Join(dir, "krypton", loginCacheFile), nil
}

type loginFlags struct {
	issuer, clientID, ca, scopes string
	timeout                      time.Duration
}

func loginCommand() *command {
	var f loginFlags
	return &command{
		name:     "login",
		synopsis: "log in at the organisation's OIDC issuer (device flow) and cache the token for operator commands",
		help: "Runs the OAuth 2.0 device authorization flow (RFC 8628) at -oidc-issuer for the public client " +
			"-oidc-client-id: prints a URL and a code to confirm in a browser, waits, verifies the ID token it gets and " +
			"caches it (with its refresh token, if the issuer gives one) in a 0600 file under the user's config directory " +
			"(" + filepath.Join("$XDG_CONFIG_HOME", "krypton", loginCacheFile) + " or ~/.config/krypton/" + loginCacheFile + "). " +
			"Operator commands given neither a certificate, -token-file nor KRYPTON_TOKEN then send that token, " +
			"refreshing it when it is about to expire. `krypton logout` removes the cache. See docs/identity.md.",
		flags: func(fs *flag.FlagSet) {
			fs.StringVar(&f.issuer, "oidc-issuer", "", "OIDC issuer URL (https), the one the servers' -oidc-issuer names")
			fs.StringVar(&f.clientID, "oidc-client-id", "krypton-cli", "the public OAuth client id of the Krypton CLI at the issuer: the servers' -oidc-audience")
			fs.StringVar(&f.ca, "oidc-ca", "", "PEM file of the CA(s) that sign the issuer's HTTPS certificate; empty: the system's")
			fs.StringVar(&f.scopes, "oidc-scopes", "openid offline_access", "space-separated scopes to ask for (openid is needed; offline_access asks for a refresh token)")
			fs.DurationVar(&f.timeout, "timeout", 10*time.Minute, "how long to wait for the code to be confirmed (the issuer's own limit may be shorter)")
		},
		run: func(ctx context.Context, s *streams, fs *flag.FlagSet) error {
			if fs.NArg() > 0 {
				return usagef("login takes no arguments")
			}
			return f.login(ctx, s)
		},
	}
}

func logoutCommand() *command {
	return &command{
		name:     "logout",
		synopsis: "remove the token `krypton login` cached",
		run: func(_ context.Context, s *streams, fs *flag.FlagSet) error {
			if fs.NArg() > 0 {
				return usagef("logout takes no arguments")
			}
			path, err := loginCachePath()
			if err != nil {
				return err
			}
			if err := os.Remove(path); errors.Is(err, os.ErrNotExist) {
				_, err = fmt.Fprintf(s.out, "Not logged in (no %s).\n", path)
				return err
			} else if err != nil {
				return err
			}
			_, err = fmt.Fprintf(s.out, "Removed %s.\n", path)
			return err
		},
	}
}

func (f *loginFlags) login(ctx context.Context, s *streams) error {
	if f.issuer == "" {
		return usagef("-oidc-issuer is required (or set KRYPTON_OIDC_ISSUER): the issuer the servers' -oidc-issuer names")
	}
	if u, err := url.Parse(f.issuer); err != nil || u.Scheme != "https" || u.Host == "" {
		return usagef("-oidc-issuer must be an https URL, got %q", f.issuer)
	}
	if f.clientID == "" {
		return usagef("-oidc-client-id must not be empty")
	}
	scopes := strings.Fields(f.scopes)
	if !containsString(scopes, oidc.ScopeOpenID) {
		return usagef("-oidc-scopes must include openid: Krypton's servers take the ID token")
	}
	if f.timeout <= 0 {
		return usagef("-timeout must be positive")
	}
	ca := ""
	if f.ca != "" {
		var err error
		if ca, err = filepath.Abs(f.ca); err != nil {
			return fmt.Errorf("-oidc-ca: %w", err)
		}
	}
	path, err := loginCachePath()
	if err != nil {
		return err
	}
	hc, err := issuerHTTPClient(ca)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(oidc.ClientContext(ctx, hc), f.timeout)
	defer cancel()
	provider, err := oidc.NewProvider(ctx, f.issuer)
	if err != nil {
		return fmt.Errorf("discovering the issuer %s: %w", f.issuer, err)
	}
	endpoint := provider.Endpoint()
	if endpoint.DeviceAuthURL == "" {
		return fmt.Errorf("the issuer %s offers no device authorization endpoint (device_authorization_endpoint in its discovery document): enable the OAuth 2.0 Device Authorization Grant for the client %s", f.issuer, f.clientID)
	}
	endpoint.AuthStyle = oauth2.AuthStyleInParams // a public client: client_id in the form, no secret
	conf := oauth2.Config{ClientID: f.clientID, Endpoint: endpoint, Scopes: scopes}
	da, err := conf.DeviceAuth(ctx)
	if err != nil {
		return fmt.Errorf("starting the device flow at %s for the client %s: %w", endpoint.DeviceAuthURL, f.clientID, err)
	}
	link := da.VerificationURIComplete
	if link == "" {
		link = da.VerificationURI
	}
	fmt.Fprintf(s.err, "To log in, open this URL in a browser:\n\n    %s\n\nand confirm the code %s\n\nWaiting...\n", link, da.UserCode)
	tok, err := conf.DeviceAccessToken(ctx, da)
	if err != nil {
		if errors.Is(err, context.DeadlineExceeded) {
			return fmt.Errorf("the code %s was not confirmed within -timeout %s; run krypton login again", da.UserCode, f.timeout)
		}
		var re *oauth2.RetrieveError
		if errors.As(err, &re) && re.ErrorCode == "access_denied" {
			return fmt.Errorf("the login was denied at the issuer (access_denied); run krypton login again to retry")
		}
		if errors.As(err, &re) && re.ErrorCode == "expired_token" {
			return fmt.Errorf("the code %s expired at the issuer before it was confirmed; run krypton login again", da.UserCode)
		}
		return fmt.Errorf("device flow: %w", err)
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return fmt.Errorf("the issuer's answer holds no ID token: check that -oidc-scopes includes openid")
	}
	// Verify what we cache, so that a wrong issuer or client id is found now and not at the server.
	idt, err := provider.Verifier(&oidc.Config{ClientID: f.clientID}).Verify(ctx, raw)
	if err != nil {
		return fmt.Errorf("the ID token the issuer gave does not verify: %w", err)
	}
	c := loginCache{
		Issuer: f.issuer, ClientID: f.clientID, Scopes: scopes, IssuerCA: ca, TokenEndpoint: endpoint.TokenURL,
		Subject: idt.Subject, IDToken: raw, RefreshToken: tok.RefreshToken, Expiry: idt.Expiry,
	}
	if err := writeLoginCache(path, c); err != nil {
		return err
	}
	refresh := "no refresh token: run krypton login again then"
	if c.RefreshToken != "" {
		refresh = "refreshed automatically after that"
	}
	_, err = fmt.Fprintf(s.out, "Logged in to %s as %s. Token cached in %s, valid until %s (%s).\n",
		f.issuer, idt.Subject, path, idt.Expiry.UTC().Format(time.RFC3339), refresh)
	return err
}

func containsString(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}

// issuerHTTPClient trusts the CAs in caFile, or the system's if empty.
func issuerHTTPClient(caFile string) (*http.Client, error) {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if caFile != "" {
		roots, err := pki.LoadCertPool(caFile)
		if err != nil {
			return nil, fmt.Errorf("-oidc-ca: %w", err)
		}
		tr.TLSClientConfig = &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}
	}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}, nil
}

// writeLoginCache writes c to path, 0600 in a 0700 directory, replacing the old one atomically
// (a command running meanwhile reads the old or the new, never half of one).
func writeLoginCache(path string, c loginCache) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("login token cache: %w", err)
	}
	tmp, err := os.CreateTemp(dir, loginCacheFile+".*") // 0600
	if err != nil {
		return fmt.Errorf("login token cache: %w", err)
	}
	defer os.Remove(tmp.Name()) // after a successful rename, there is nothing to remove
	if _, err := tmp.Write(append(b, '\n')); err != nil {
		tmp.Close()
		return fmt.Errorf("login token cache: %w", err)
	}
	if err := tmp.Sync(); err != nil {
		tmp.Close()
		return fmt.Errorf("login token cache: %w", err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("login token cache: %w", err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("login token cache: %w", err)
	}
	return nil
}

// readLoginCache reads the cache, refusing one that others may read (as ssh refuses such a key).
func readLoginCache(path string) (loginCache, error) {
	var c loginCache
	fi, err := os.Stat(path)
	if err != nil {
		return c, err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return c, fmt.Errorf("the login token cache %s may be read by others (mode %04o): chmod 600 %s, or run krypton login again", path, fi.Mode().Perm(), path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return c, err
	}
	if err := json.Unmarshal(b, &c); err != nil || c.IDToken == "" || c.Issuer == "" {
		return c, fmt.Errorf("the login token cache %s is not one krypton login wrote: run krypton login again", path)
	}
	return c, nil
}

// cachedLogin is the TokenSource of an operator command that was given no certificate, token file
// nor KRYPTON_TOKEN while a login is cached: it sends the cached ID token, refreshing it first when
// it expires within loginRefreshMargin and a refresh token is cached.
type cachedLogin struct {
	path string
	mu   sync.Mutex // one refresh at a time
}

// loginCacheSource returns the cached login's TokenSource, or nil when there is no cache.
func loginCacheSource() *cachedLogin {
	path, err := loginCachePath()
	if err != nil {
		return nil
	}
	if _, err := os.Lstat(path); err != nil {
		return nil
	}
	return &cachedLogin{path: path}
}

func (l *cachedLogin) Token(ctx context.Context) (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	c, err := readLoginCache(l.path)
	if err != nil {
		return "", err
	}
	if time.Until(c.Expiry) > loginRefreshMargin {
		return c.IDToken, nil
	}
	if c.RefreshToken == "" {
		return "", fmt.Errorf("the token krypton login cached in %s expired at %s and there is no refresh token: run krypton login again", l.path, c.Expiry.UTC().Format(time.RFC3339))
	}
	hc, err := issuerHTTPClient(c.IssuerCA)
	if err != nil {
		return "", fmt.Errorf("refreshing the cached login: %w", err)
	}
	ctx = oidc.ClientContext(ctx, hc)
	conf := oauth2.Config{ClientID: c.ClientID, Scopes: c.Scopes,
		Endpoint: oauth2.Endpoint{TokenURL: c.TokenEndpoint, AuthStyle: oauth2.AuthStyleInParams}}
	tok, err := conf.TokenSource(ctx, &oauth2.Token{RefreshToken: c.RefreshToken}).Token()
	if err != nil {
		return "", fmt.Errorf("refreshing the token cached in %s at %s: %w; run krypton login again", l.path, c.TokenEndpoint, err)
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return "", fmt.Errorf("the issuer's refresh answer holds no ID token: run krypton login again")
	}
	// The server verifies the token; here it is only read for its expiry and subject, with the
	// issuer's keys, as at login.
	provider, err := oidc.NewProvider(ctx, c.Issuer)
	if err != nil {
		return "", fmt.Errorf("refreshing the cached login: discovering the issuer %s: %w", c.Issuer, err)
	}
	idt, err := provider.Verifier(&oidc.Config{ClientID: c.ClientID}).Verify(ctx, raw)
	if err != nil {
		return "", fmt.Errorf("the ID token the issuer gave on refresh does not verify: %w; run krypton login again", err)
	}
	c.IDToken, c.Subject, c.Expiry = raw, idt.Subject, idt.Expiry
	if tok.RefreshToken != "" { // oauth2 keeps the old one when the issuer does not rotate it
		c.RefreshToken = tok.RefreshToken
	}
	if err := writeLoginCache(l.path, c); err != nil {
		return "", err
	}
	return raw, nil
}
