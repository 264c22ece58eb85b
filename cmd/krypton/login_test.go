package main

import (
	"bufio"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/kryptonkms/krypton/governance"
	"github.com/kryptonkms/krypton/governance/governancetest"
	"github.com/kryptonkms/krypton/internal/oidcoptest"
	"github.com/kryptonkms/krypton/region"
	"github.com/kryptonkms/krypton/region/regiontest"
)

// TestLoginRealOIDCProvider runs a real OpenID provider (zitadel/oidc's OP, internal/oidcop), a
// governance node and a region node that accept its tokens, and drives everything through the CLI:
//
//   - tokens the OP really issued but that are expired, for another client, from another issuer,
//     or signed by a key the issuer never published are refused, each with its reason;
//   - a viewer's token reads but may not change anything;
//   - `krypton login` runs the device flow against the OP (the test approves the code at the OP's
//     verification page, as a user's browser would), caches the token 0600 under the user's config
//     directory, and operator commands then use it with no token or certificate flag;
//   - an expired cached token is refreshed with the refresh token and the cache rewritten;
//   - a cache others may read is refused; a denied login fails; `krypton logout` removes the cache.
func TestLoginRealOIDCProvider(t *testing.T) {
	users := []oidcoptest.User{
		{Name: "alice", Password: "alice-pw", Groups: []string{"krypton-admins"}},
		{Name: "victor", Password: "victor-pw", Groups: []string{"krypton-auditors"}},
	}
	idp := oidcoptest.Start(t, oidcoptest.Options{Clients: []string{"krypton-cli", "other-app"}, Users: users})
	otherIssuer := oidcoptest.Start(t, oidcoptest.Options{Clients: []string{"krypton-cli"}, Users: users})
	forger := oidcoptest.Start(t, oidcoptest.Options{Clients: []string{"krypton-cli"}, Users: users, Issuer: idp.Issuer})

	dir := t.TempDir()
	issuerCA := filepath.Join(dir, "issuer-ca.pem")
	if err := os.WriteFile(issuerCA, idp.CAPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	var of oidcFlags
	parseFlags(t, of.declare, "-oidc-issuer", idp.Issuer, "-oidc-audience", "krypton-cli", "-oidc-ca", issuerCA,
		"-oidc-role-map", "admin=krypton-admins,viewer=krypton-auditors")
	v, err := of.verifier(nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(v.Close) // after governance's own cleanup, registered later, has stopped it
	g := governancetest.Start(t, 1, governancetest.WithConfig(func(c *governance.Config) { c.OIDC = v }))
	g.CreateTenant("acme", "file:///tmp/governance-test/root.key", "eu")
	r := regiontest.Start(t, 1, regiontest.WithCA(g.CA), regiontest.WithConfig(func(c *region.Config) { c.OIDC = v }))
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, g.CA.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}

	// The environment of an operator with nothing but a login: no certificate, no token.
	config := filepath.Join(dir, "config")
	t.Setenv("XDG_CONFIG_HOME", config)
	for _, k := range []string{"KRYPTON_TOKEN", "KRYPTON_TOKEN_FILE", "KRYPTON_CLIENT_CERT", "KRYPTON_CLIENT_KEY", "KRYPTON_GOVERNANCE_ADDR"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	krypton := func(args ...string) (string, string, int) {
		t.Helper()
		stdout, _ := os.CreateTemp(dir, "stdout")
		stderr, _ := os.CreateTemp(dir, "stderr")
		code := run(ctx, args, stdout, stderr)
		out, errOut := readBack(t, stdout), readBack(t, stderr)
		t.Logf("krypton %s -> %d\n%s%s", strings.Join(args, " "), code, out, errOut)
		return out, errOut, code
	}
	conn := []string{"-governance", g.Addr(0), "-ca-cert", caFile, "-timeout", "30s"}
	status := append([]string{"governance", "status"}, conn...)
	regionStatus := []string{"status", "-addr", r.Cfgs[0].RPCAddr, "-ca-cert", caFile, "-timeout", "30s"}
	lock := append(append([]string{"tenant", "lock"}, conn...), "-reason", "oidc test")
	unlock := append([]string{"tenant", "unlock"}, conn...)

	// Tokens the OP issued that governance must refuse. The expired one is issued already expired
	// beyond the verifier's five minutes of leeway for clock skew.
	idp.SetIDTokenLifetime("krypton-cli", -10*time.Minute)
	var eg errgroup.Group
	for name, get := range map[string]func() (string, error){
		"expired":        func() (string, error) { return idp.Token(ctx, "krypton-cli", "alice") },
		"other-audience": func() (string, error) { return idp.Token(ctx, "other-app", "alice") },
		"other-issuer":   func() (string, error) { return otherIssuer.Token(ctx, "krypton-cli", "alice") },
		"unknown-key":    func() (string, error) { return forger.Token(ctx, "krypton-cli", "alice") },
	} {
		name, get := name, get
		eg.Go(func() error {
			tok, err := get()
			if err == nil {
				err = os.WriteFile(filepath.Join(dir, name+".jwt"), []byte(tok), 0o600)
			}
			return err
		})
	}
	if err := eg.Wait(); err != nil {
		t.Fatal(err)
	}
	idp.SetIDTokenLifetime("krypton-cli", time.Hour)
	viewer, err := idp.Token(ctx, "krypton-cli", "victor")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "viewer.jwt"), []byte(viewer), 0o600); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]string{
		"expired":        "bearer token expired",
		"other-audience": "not valid for this server",
		"other-issuer":   "not valid for this server",
		"unknown-key":    "not valid for this server",
	} {
		for _, cmd := range [][]string{status, regionStatus} {
			_, errOut, code := krypton(append(cmd, "-token-file", filepath.Join(dir, name+".jwt"))...)
			if code != 1 || !strings.Contains(errOut, "Unauthenticated") || !strings.Contains(errOut, want) {
				t.Errorf("%s token, krypton %s: exit %d, %q; want Unauthenticated, %q", name, cmd[0], code, errOut, want)
			}
		}
	}
	viewerFile := []string{"-token-file", filepath.Join(dir, "viewer.jwt")}
	if _, errOut, code := krypton(append(status, viewerFile...)...); code != 0 {
		t.Fatalf("governance status as a viewer: exit %d, %s", code, errOut)
	}
	if _, errOut, code := krypton(append(append(lock, viewerFile...), "acme")...); code != 1 || !strings.Contains(errOut, "PermissionDenied") {
		t.Fatalf("tenant lock as a viewer: exit %d, %q; want PermissionDenied", code, errOut)
	}

	// krypton login, approved at the OP's verification page.
	login := func(allow bool) (string, string, int) {
		t.Helper()
		r, w, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		stdout, _ := os.CreateTemp(dir, "stdout")
		lines := make(chan string, 64)
		go func() { // ends at EOF, when run has returned and w is closed
			defer close(lines)
			sc := bufio.NewScanner(r)
			for sc.Scan() {
				lines <- sc.Text()
			}
		}()
		done := make(chan int, 1)
		go func() {
			defer w.Close()
			done <- run(ctx, []string{"login", "-oidc-issuer", idp.Issuer, "-oidc-ca", issuerCA, "-timeout", "1m"}, stdout, w)
		}()
		var link, code, errOut string
		for line := range lines {
			errOut += line + "\n"
			if s := strings.TrimSpace(line); strings.HasPrefix(s, "https://") {
				link = s
			}
			if _, c, ok := strings.Cut(line, "confirm the code "); ok {
				code = c
			}
			if link != "" && code != "" {
				break
			}
		}
		if link == "" || code == "" {
			t.Fatalf("krypton login printed no link and code:\n%s", errOut)
		}
		if !strings.Contains(link, "user_code="+code) {
			t.Fatalf("the link %q does not carry the code %q", link, code)
		}
		if err := idp.Approve(ctx, link, "alice", "alice-pw", allow); err != nil {
			t.Fatal(err)
		}
		for line := range lines {
			errOut += line + "\n"
		}
		exit := <-done
		out := readBack(t, stdout)
		t.Logf("krypton login (allow %v) -> %d\n%s%s", allow, exit, out, errOut)
		return out, errOut, exit
	}
	out, errOut, code := login(true)
	if code != 0 || !strings.Contains(out, "Logged in to "+idp.Issuer+" as alice") {
		t.Fatalf("krypton login: exit %d\n%s%s", code, out, errOut)
	}
	cache := filepath.Join(config, "krypton", "token.json")
	for path, want := range map[string]os.FileMode{cache: 0o600, filepath.Dir(cache): 0o700} {
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != want {
			t.Fatalf("%s: %v, %v; want mode %04o", path, fi, err, want)
		}
	}
	// Operator commands use the cached token, at governance and at a region: alice is an admin.
	if _, errOut, code := krypton(append(lock, "acme")...); code != 0 {
		t.Fatalf("tenant lock with the cached login: exit %d, %s", code, errOut)
	}
	if out, errOut, code := krypton(append(regionStatus, "-format", "json")...); code != 0 || !strings.Contains(out, `"node_id"`) {
		t.Fatalf("region status with the cached login: exit %d, %s%s", code, out, errOut)
	}

	// An expired cached token is refreshed, and the cache rewritten.
	readCache := func() loginCache {
		t.Helper()
		var c loginCache
		b, err := os.ReadFile(cache)
		if err == nil {
			err = json.Unmarshal(b, &c)
		}
		if err != nil {
			t.Fatal(err)
		}
		return c
	}
	before := readCache()
	if before.RefreshToken == "" || before.Subject != "alice" {
		t.Fatalf("cache holds subject %q, a refresh token: %v", before.Subject, before.RefreshToken != "")
	}
	expired := before
	expired.Expiry = time.Now().Add(-time.Hour)
	if err := writeLoginCache(cache, expired); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := krypton(append(unlock, "acme")...); code != 0 {
		t.Fatalf("tenant unlock with an expired cached login: exit %d, %s", code, errOut)
	}
	after := readCache()
	if after.IDToken == before.IDToken || after.RefreshToken == before.RefreshToken || time.Until(after.Expiry) < 30*time.Minute {
		t.Fatalf("the cache was not refreshed: new token %v, new refresh token %v, expiry %s",
			after.IDToken != before.IDToken, after.RefreshToken != before.RefreshToken, after.Expiry)
	}
	if fi, err := os.Stat(cache); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("the refreshed cache: %v, %v; want mode 0600", fi, err)
	}

	// A cache others may read is refused, naming the fix.
	if err := os.Chmod(cache, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, errOut, code := krypton(status...); code != 1 || !strings.Contains(errOut, "chmod 600") {
		t.Fatalf("a 0644 cache: exit %d, %q; want a refusal naming chmod 600", code, errOut)
	}

	// A denied login fails and says so; the old cache is left as it was.
	if _, errOut, code := login(false); code != 1 || !strings.Contains(errOut, "denied") {
		t.Fatalf("a denied login: exit %d, %q", code, errOut)
	}

	// logout removes the cache; commands then ask for a certificate again.
	if out, _, code := krypton("logout"); code != 0 || !strings.Contains(out, "Removed "+cache) {
		t.Fatalf("krypton logout: exit %d, %q", code, out)
	}
	if _, errOut, code := krypton(status...); code != 2 || !strings.Contains(errOut, "-client-cert is required") {
		t.Fatalf("after logout: exit %d, %q", code, errOut)
	}
}
