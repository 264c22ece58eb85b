package xks

import (
	"bufio"
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// SigningService is the SigV4 service name AWS KMS signs XKS proxy requests with (the
// specification's Appendix A: the credential scope ends in /<region>/kms-xks-proxy/aws4_request).
const SigningService = "kms-xks-proxy"

// MaxClockSkew is how far a request's X-Amz-Date may be from the proxy's clock, either way: the
// specification's five minutes, against replays.
const MaxClockSkew = 5 * time.Minute

var (
	accessKeyIDRe = regexp.MustCompile(`^[A-Z2-7]{20,30}$`)
	secretRe      = regexp.MustCompile(`^[A-Za-z0-9+/=]{43,64}$`)
)

// credentials is the set of access key IDs accepted at once (several during a rotation) and
// their secrets. Secrets never leave this type: not in errors, logs or String.
type credentials struct {
	secrets map[string]string
}

func (c *credentials) String() string { return fmt.Sprintf("%d SigV4 credentials", len(c.secrets)) }

// loadCredentials reads a credentials file: one "ACCESS_KEY_ID SECRET_ACCESS_KEY" pair a line,
// blank lines and lines starting with # ignored. The file must not be readable by group or
// others, as a private key's. Errors name the line, never its content.
func loadCredentials(path string) (*credentials, os.FileInfo, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, nil, fmt.Errorf("xks: credentials file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, nil, fmt.Errorf("xks: credentials file %s is readable by group or others (mode %v): chmod 600 it", path, fi.Mode().Perm())
	}
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("xks: credentials file: %w", err)
	}
	defer clear(raw)
	c := &credentials{secrets: map[string]string{}}
	sc := bufio.NewScanner(bytes.NewReader(raw))
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		f := strings.Fields(line)
		switch {
		case len(f) != 2:
			return nil, nil, fmt.Errorf("xks: credentials file %s line %d: want ACCESS_KEY_ID SECRET_ACCESS_KEY separated by a space", path, n)
		case !accessKeyIDRe.MatchString(f[0]):
			return nil, nil, fmt.Errorf("xks: credentials file %s line %d: the access key ID must be 20 to 30 characters A-Z and 2-7 (XKS API Appendix A)", path, n)
		case !secretRe.MatchString(f[1]):
			return nil, nil, fmt.Errorf("xks: credentials file %s line %d: the secret access key must be 43 to 64 base64 characters (openssl rand 32 | base64)", path, n)
		case c.secrets[f[0]] != "":
			return nil, nil, fmt.Errorf("xks: credentials file %s line %d: access key ID %s appears twice", path, n, f[0])
		}
		c.secrets[f[0]] = f[1]
	}
	if len(c.secrets) == 0 {
		return nil, nil, fmt.Errorf("xks: credentials file %s holds no credentials", path)
	}
	return c, fi, nil
}

// credentialStore holds the current credentials and reloads the file when it changes (checked at
// most once a second, on requests) or on Reload (SIGHUP in krypton gateway). A file that fails to
// load leaves the credentials in force unchanged.
type credentialStore struct {
	path    string
	onError func(error)

	mu      sync.Mutex
	cur     *credentials
	modTime time.Time
	size    int64
	checked time.Time
}

func newCredentialStore(path string, onError func(error)) (*credentialStore, error) {
	c, fi, err := loadCredentials(path)
	if err != nil {
		return nil, err
	}
	return &credentialStore{path: path, onError: onError, cur: c, modTime: fi.ModTime(), size: fi.Size(), checked: time.Now()}, nil
}

// reload reads the file again; it keeps the current credentials if that fails.
func (s *credentialStore) reload() error {
	c, fi, err := loadCredentials(s.path)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.checked = time.Now()
	if err != nil {
		return err
	}
	s.cur, s.modTime, s.size = c, fi.ModTime(), fi.Size()
	return nil
}

// get returns the credentials in force, first reloading the file if it changed.
func (s *credentialStore) get(now time.Time) *credentials {
	s.mu.Lock()
	if now.Sub(s.checked) < time.Second {
		c := s.cur
		s.mu.Unlock()
		return c
	}
	s.checked = now
	fi, err := os.Stat(s.path)
	changed := err == nil && (!fi.ModTime().Equal(s.modTime) || fi.Size() != s.size)
	s.mu.Unlock()
	if changed {
		if err := s.reload(); err != nil && s.onError != nil {
			s.onError(err)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.cur
}

var errAuth = xerr(AuthenticationFailedException, "the request's AWS SigV4 signature is missing or invalid")

// authorization is a parsed SigV4 Authorization header.
type authorization struct {
	accessKeyID, date, region, service string
	signedHeaders                      []string
	signature                          string
}

func parseAuthorization(h string) (authorization, error) {
	var a authorization
	rest, ok := strings.CutPrefix(h, "AWS4-HMAC-SHA256 ")
	if !ok {
		return a, errors.New("not AWS4-HMAC-SHA256")
	}
	for _, part := range strings.Split(rest, ",") {
		k, v, ok := strings.Cut(strings.TrimSpace(part), "=")
		if !ok {
			return a, errors.New("malformed")
		}
		switch k {
		case "Credential":
			f := strings.Split(v, "/")
			if len(f) != 5 || f[4] != "aws4_request" {
				return a, errors.New("malformed credential scope")
			}
			a.accessKeyID, a.date, a.region, a.service = f[0], f[1], f[2], f[3]
		case "SignedHeaders":
			a.signedHeaders = strings.Split(v, ";")
		case "Signature":
			a.signature = v
		}
	}
	if a.accessKeyID == "" || len(a.signedHeaders) == 0 || a.signature == "" {
		return a, errors.New("incomplete")
	}
	return a, nil
}

// verify checks a request's SigV4 signature over body, its credential scope (region, service
// and date) and the freshness of its X-Amz-Date. It returns the access key ID that signed.
//
// The signature is recomputed with aws-sdk-go-v2's signer on a copy of the request that carries
// only the headers the caller signed, then compared in constant time, rather than by a
// hand-written canonicalisation. The SDK signer never signs User-Agent, Expect, Authorization
// or X-Amzn-Trace-Id, so a request that signed those fails; AWS KMS signs host and x-amz-date
// (Appendix A), curl --aws-sigv4 adds content-type.
func verify(r *http.Request, body []byte, creds *credentials, region string, now time.Time) (string, error) {
	a, err := parseAuthorization(r.Header.Get("Authorization"))
	if err != nil {
		return "", errAuth
	}
	t, err := time.Parse("20060102T150405Z", r.Header.Get("X-Amz-Date"))
	if err != nil {
		return "", xerr(AuthenticationFailedException, "the request has no valid X-Amz-Date header")
	}
	if d := now.Sub(t); d > MaxClockSkew || d < -MaxClockSkew {
		return "", xerr(AuthenticationFailedException, "the request's X-Amz-Date is more than 5 minutes from the proxy's clock: check both clocks")
	}
	if a.date != t.Format("20060102") || a.service != SigningService || a.region != region {
		return "", xerr(AuthenticationFailedException, "the SigV4 credential scope does not name this proxy's region, the service kms-xks-proxy and the request's date")
	}
	secret, ok := creds.secrets[a.accessKeyID]
	if !ok {
		return "", xerr(AuthenticationFailedException, "the SigV4 access key ID is not one this proxy accepts")
	}
	signed := map[string]bool{}
	for _, h := range a.signedHeaders {
		signed[h] = true
	}
	if !signed["host"] || !signed["x-amz-date"] {
		return "", xerr(AuthenticationFailedException, "the SigV4 signature must cover the host and x-amz-date headers")
	}
	u := &url.URL{Scheme: "https", Host: r.Host, Path: r.URL.Path, RawPath: r.URL.RawPath, RawQuery: r.URL.RawQuery}
	cp, err := http.NewRequestWithContext(context.Background(), r.Method, u.String(), nil)
	if err != nil {
		return "", errAuth
	}
	cp.Host = r.Host
	for _, h := range a.signedHeaders {
		switch h {
		case "host", "x-amz-date":
		case "content-length":
			cp.ContentLength = r.ContentLength
		default:
			if vs := r.Header.Values(h); len(vs) > 0 {
				cp.Header[http.CanonicalHeaderKey(h)] = vs
			}
		}
	}
	sum := sha256.Sum256(body)
	if err := v4.NewSigner().SignHTTP(context.Background(), aws.Credentials{AccessKeyID: a.accessKeyID, SecretAccessKey: secret},
		cp, hex.EncodeToString(sum[:]), SigningService, region, t); err != nil {
		return "", errAuth
	}
	want, err := parseAuthorization(cp.Header.Get("Authorization"))
	if err != nil || strings.Join(want.signedHeaders, ";") != strings.Join(a.signedHeaders, ";") ||
		!hmac.Equal([]byte(want.signature), []byte(a.signature)) {
		return "", errAuth
	}
	return a.accessKeyID, nil
}
