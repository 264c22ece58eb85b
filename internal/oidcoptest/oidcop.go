// Package oidcoptest runs a real OpenID provider for tests: zitadel/oidc's OP (github.com/zitadel/oidc/v3/pkg/op)
// over HTTPS on loopback, with the in-memory storage of zitadel's own example server. It serves the
// real endpoints (discovery, JWKS, token, device authorization, refresh) and signs real ID tokens;
// nothing in it is a stand-in for the protocol. What this package adds around zitadel's example:
//
//   - public clients (no secret, as a CLI is) allowed the device and refresh grants, with an ID token
//     lifetime a test may change (SetIDTokenLifetime; a negative one issues already-expired tokens);
//
//   - users whose "groups" claim a test chooses (Krypton maps groups to roles);
//
//   - a minimal user-facing approval page at /device (the verification URI), taking the user code,
//     a user name and password and "allow" or "deny", which the example storage then records.
//
//     op := oidcoptest.Start(t, oidcoptest.Options{
//     Clients: []string{"krypton-cli"},
//     Users:   []oidcoptest.User{{Name: "alice", Password: "pw", Groups: []string{"krypton-admins"}}},
//     })
//     op.Issuer      // https://127.0.0.1:port, as tokens carry it in "iss"
//     op.CAPEM()     // the CA of its HTTPS certificate
//     op.Approve(ctx, verificationURL, "alice", "pw", true)  // what the user does in a browser
//     op.Token(ctx, "krypton-cli", "alice")                   // a whole device flow, approved in storage
package oidcoptest

import (
	"context"
	"crypto/rand"
	"encoding/pem"
	"errors"
	"fmt"
	"html/template"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zitadel/oidc/v3/example/server/storage"
	"github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"
	"golang.org/x/oauth2"
	"golang.org/x/text/language"
)

// User is a person who can log in at the OP.
type User struct {
	Name     string // the user name and the token's subject
	Password string
	Groups   []string // the "groups" claim of the user's ID tokens
}

// Options configure Start.
type Options struct {
	// Clients are the ids of public clients allowed the device and refresh grants.
	Clients []string
	Users   []User
	// Issuer, if set, is the issuer the OP names in discovery and in the tokens' "iss" instead of
	// its own URL: with another OP's URL, it issues tokens in that issuer's name signed by a key
	// the other never published.
	Issuer string
}

// OP is a running OpenID provider.
type OP struct {
	URL    string // where it listens: https://127.0.0.1:port
	Issuer string // its issuer: URL, unless Options.Issuer
	srv    *httptest.Server
	store  *opStorage
}

// Start runs an OP until the test ends.
func Start(t testing.TB, opts Options) *OP {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o := &OP{URL: "https://" + ln.Addr().String()}
	o.Issuer = o.URL
	if opts.Issuer != "" {
		o.Issuer = opts.Issuer
	}
	users := userStore{}
	for _, u := range opts.Users {
		users[u.Name] = &storage.User{ID: u.Name, Username: u.Name, Password: u.Password, PreferredLanguage: language.English}
	}
	base := map[string]*storage.Client{} // the example storage checks the client id on StoreDeviceAuthorization
	o.store = &opStorage{clients: map[string]*publicClient{}, groups: map[string][]string{}}
	for _, id := range opts.Clients {
		base[id] = storage.NativeClient(id)
		o.store.clients[id] = &publicClient{Client: base[id], lifetime: time.Hour}
	}
	for _, u := range opts.Users {
		o.store.groups[u.Name] = u.Groups
	}
	o.store.Storage = storage.NewStorageWithClients(users, base)

	var key [32]byte // encrypts the OP's opaque access tokens
	rand.Read(key[:])
	provider, err := op.NewProvider(&op.Config{
		CryptoKey:             key,
		GrantTypeRefreshToken: true,
		SupportedUILocales:    []language.Tag{language.English},
		DeviceAuthorization: op.DeviceAuthorizationConfig{
			Lifetime:     5 * time.Minute,
			PollInterval: time.Second, // the least RFC 8628's integer seconds allow
			UserFormPath: "/device",
			UserCode:     op.UserCodeBase20,
		},
	}, o.store, op.StaticIssuer(o.Issuer))
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.HandleFunc("/device", o.serveDevice)
	mux.Handle("/", provider)
	o.srv = httptest.NewUnstartedServer(mux)
	o.srv.Listener.Close()
	o.srv.Listener = ln
	o.srv.StartTLS()
	t.Cleanup(o.srv.Close)
	return o
}

// CAPEM is the PEM of the CA that signed the OP's HTTPS certificate.
func (o *OP) CAPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: o.srv.Certificate().Raw})
}

// Client is an HTTP client that trusts the OP's certificate.
func (o *OP) Client() *http.Client { return o.srv.Client() }

// SetIDTokenLifetime sets how long the client's next ID tokens are valid; negative: already
// expired by that much.
func (o *OP) SetIDTokenLifetime(clientID string, d time.Duration) {
	o.store.mu.Lock()
	defer o.store.mu.Unlock()
	o.store.clients[clientID].lifetime = d
}

// Approve does what a user does in a browser at the verification URI the device flow printed
// (verification_uri_complete, carrying the user code): log in and allow, or deny.
func (o *OP) Approve(ctx context.Context, verificationURL, user, password string, allow bool) error {
	u, err := url.Parse(verificationURL)
	if err != nil {
		return err
	}
	action := "deny"
	if allow {
		action = "allow"
	}
	form := url.Values{"user_code": {u.Query().Get("user_code")}, "username": {user}, "password": {password}, "action": {action}}
	u.RawQuery = ""
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, u.String(), strings.NewReader(form.Encode()))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	resp, err := o.Client().Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("oidcop: approving at %s: %s", u, resp.Status)
	}
	return nil
}

// Token runs a whole device flow for clientID at the OP's own endpoints, the user approving in
// storage at once, and returns the ID token.
func (o *OP) Token(ctx context.Context, clientID, user string) (string, error) {
	conf := oauth2.Config{ClientID: clientID, Scopes: []string{oidc.ScopeOpenID}, Endpoint: oauth2.Endpoint{
		DeviceAuthURL: o.URL + op.DefaultEndpoints.DeviceAuthorization.Relative(),
		TokenURL:      o.URL + op.DefaultEndpoints.Token.Relative(),
		AuthStyle:     oauth2.AuthStyleInParams,
	}}
	ctx = context.WithValue(ctx, oauth2.HTTPClient, o.Client())
	da, err := conf.DeviceAuth(ctx)
	if err != nil {
		return "", err
	}
	if err := o.store.CompleteDeviceAuthorization(ctx, da.UserCode, user); err != nil {
		return "", err
	}
	tok, err := conf.DeviceAccessToken(ctx, da)
	if err != nil {
		return "", err
	}
	id, _ := tok.Extra("id_token").(string)
	if id == "" {
		return "", errors.New("oidcop: no id_token in the token response")
	}
	return id, nil
}

var devicePage = template.Must(template.New("device").Parse(`<!DOCTYPE html>
<form method="post" action="/device">
<p>Code <input name="user_code" value="{{.}}"></p>
<p>User <input name="username"> Password <input name="password" type="password"></p>
<button name="action" value="allow">Allow</button> <button name="action" value="deny">Deny</button>
</form>`))

// serveDevice is the verification URI: GET shows the form, POST logs the user in and records the
// decision with the example storage's own calls.
func (o *OP) serveDevice(w http.ResponseWriter, r *http.Request) {
	if err := r.ParseForm(); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	code := r.Form.Get("user_code")
	if r.Method != http.MethodPost {
		devicePage.Execute(w, code)
		return
	}
	if err := o.store.CheckUsernamePasswordSimple(r.PostForm.Get("username"), r.PostForm.Get("password")); err != nil {
		http.Error(w, err.Error(), http.StatusForbidden)
		return
	}
	if _, err := o.store.GetDeviceAuthorizationByUserCode(r.Context(), code); err != nil {
		http.Error(w, err.Error(), http.StatusNotFound)
		return
	}
	var err error
	if r.PostForm.Get("action") == "allow" {
		err = o.store.CompleteDeviceAuthorization(r.Context(), code, r.PostForm.Get("username"))
	} else {
		err = o.store.DenyDeviceAuthorization(r.Context(), code)
	}
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	fmt.Fprintln(w, "Done: you may return to your device.")
}

// opStorage is zitadel's example storage with Krypton's clients and claims.
type opStorage struct {
	*storage.Storage
	mu      sync.Mutex
	clients map[string]*publicClient
	groups  map[string][]string // subject -> groups
}

func (s *opStorage) GetClientByClientID(_ context.Context, id string) (op.Client, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.clients[id]
	if !ok {
		return nil, errors.New("client not found")
	}
	return &publicClient{Client: c.Client, lifetime: c.lifetime}, nil
}

func (s *opStorage) AuthorizeClientIDSecret(context.Context, string, string) error {
	return errors.New("the clients are public: they have no secret")
}

// SetUserinfoFromRequest puts the subject and its groups in the ID token. (The example's own looks
// the subject up by user id, but its device flow records the user name.)
func (s *opStorage) SetUserinfoFromRequest(_ context.Context, info *oidc.UserInfo, req op.IDTokenRequest, _ []string) error {
	info.Subject = req.GetSubject()
	if g := s.groups[req.GetSubject()]; len(g) > 0 {
		info.AppendClaims("groups", g)
	}
	return nil
}

// CreateAccessAndRefreshTokens hands a device flow's request to the example storage as the
// authorization request it knows, so that its refresh token records the client (the example
// records the client only for the code flow, and a refresh would then be refused).
func (s *opStorage) CreateAccessAndRefreshTokens(ctx context.Context, req op.TokenRequest, current string) (string, string, time.Time, error) {
	if d, ok := req.(*op.DeviceAuthorizationState); ok {
		req = &storage.AuthRequest{ApplicationID: d.ClientID, UserID: d.Subject, Scopes: d.Scopes}
	}
	return s.Storage.CreateAccessAndRefreshTokens(ctx, req, current)
}

// publicClient is a native (public) client allowed the device and refresh grants.
type publicClient struct {
	*storage.Client
	lifetime time.Duration
}

func (c *publicClient) GrantTypes() []oidc.GrantType {
	return []oidc.GrantType{oidc.GrantTypeDeviceCode, oidc.GrantTypeRefreshToken}
}

func (c *publicClient) IDTokenLifetime() time.Duration { return c.lifetime }

// userStore is the example storage's UserStore over a fixed map.
type userStore map[string]*storage.User

func (u userStore) GetUserByID(id string) *storage.User         { return u[id] }
func (u userStore) GetUserByUsername(name string) *storage.User { return u[name] }
func (u userStore) ExampleClientID() string                     { return "" }
