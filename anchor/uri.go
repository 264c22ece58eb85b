package anchor

import (
	"fmt"
	"net"
	"net/url"
	"path"
	"regexp"
	"strings"
)

// Scheme names, as they appear before "://" (or ":" for pkcs11).
const (
	SchemeAWSKMS  = "awskms"
	SchemeAzureKV = "azurekv"
	SchemeFile    = "file"
	SchemeGCPKMS  = "gcpkms"
	SchemePKCS11  = "pkcs11"
)

// Schemes lists every scheme Parse understands, sorted.
var Schemes = []string{SchemeAWSKMS, SchemeAzureKV, SchemeFile, SchemeGCPKMS, SchemePKCS11}

// A URI is a parsed and validated anchor URI. Its concrete type is one of
// *AWSKMSURI, *GCPKMSURI, *AzureKVURI, *PKCS11URI or *FileURI; providers
// type-switch on it.
//
// String returns a canonical form with secrets redacted (a pkcs11
// pin-value becomes "xxxxx"), safe for logs and for Description.URI.
type URI interface {
	// Scheme returns one of Schemes.
	Scheme() string
	// KeyName names the key in the provider's own terms, without secrets.
	KeyName() string
	// String returns the redacted canonical URI.
	String() string
}

// Parse parses and validates an anchor URI of any of the five schemes,
// without contacting the provider: governance calls it when a tenant is
// created, so a typo is caught before any region depends on it.
//
//	u, err := anchor.Parse("awskms://alias/krypton-acme?region=eu-west-1")
//	// u.(*anchor.AWSKMSURI).Region == "eu-west-1"
//
// Errors wrap ErrInvalidURI or ErrUnknownScheme and never echo the URI
// (a pkcs11 URI may hold a PIN); they name the part that is wrong.
func Parse(s string) (URI, error) {
	for i := 0; i < len(s); i++ {
		if s[i] <= ' ' || s[i] == 0x7f {
			return nil, fmt.Errorf("%w: control character or space at byte %d", ErrInvalidURI, i)
		}
	}
	scheme, rest, ok := splitScheme(s)
	if !ok {
		return nil, fmt.Errorf("%w: no scheme (want one of %s)", ErrInvalidURI, strings.Join(Schemes, ", "))
	}
	switch scheme {
	case SchemeAWSKMS:
		return parseAWSKMS(rest)
	case SchemeGCPKMS:
		return parseGCPKMS(rest)
	case SchemeAzureKV:
		return parseAzureKV(rest)
	case SchemePKCS11:
		return parsePKCS11(rest)
	case SchemeFile:
		return parseFile(s)
	}
	return nil, fmt.Errorf("%w %s (known: %s)", ErrUnknownScheme, quoteName(scheme), strings.Join(Schemes, ", "))
}

// IsDevelopment says whether uri names a development anchor (file://), from its scheme alone,
// without parsing the rest or touching anything. A server that refuses development anchors asks
// this before Open: opening first would read the key file, or create one (file://...?create=1),
// on a production node, and answer with the file's state (missing: "destroyed"; too open:
// "unusable") where the one useful answer is that the flag allowing development anchors is off.
func IsDevelopment(uri string) bool {
	i := strings.IndexByte(uri, ':')
	return i > 0 && strings.EqualFold(strings.TrimSpace(uri[:i]), SchemeFile)
}

// splitScheme returns the lower-cased scheme and what follows "://" (or
// ":" for pkcs11, whose RFC 7512 form has no authority).
func splitScheme(s string) (scheme, rest string, ok bool) {
	i := strings.IndexByte(s, ':')
	if i <= 0 {
		return "", "", false
	}
	scheme = strings.ToLower(s[:i])
	if scheme == SchemePKCS11 {
		return scheme, s[i+1:], true
	}
	if !strings.HasPrefix(s[i:], "://") {
		if scheme == SchemeAWSKMS || scheme == SchemeGCPKMS || scheme == SchemeAzureKV || scheme == SchemeFile {
			return "", "", false
		}
		return scheme, "", true // reported as unknown
	}
	return scheme, s[i+3:], true
}

var nameRE = regexp.MustCompile(`^[a-z][a-z0-9+._-]{0,31}$`)

// quoteName quotes a scheme for an error message if it looks like one,
// and hides it otherwise: what does not look like a scheme may be a
// misplaced secret. Unknown attribute and parameter names are never
// shown (a PIN typed in the wrong place would be), only their position.
func quoteName(s string) string {
	if nameRE.MatchString(s) {
		return fmt.Sprintf("%q", s)
	}
	return "(not shown)"
}

// parseQuery splits "a=b&c=d" into a map, percent-decoding values,
// allowing only the given keys, each once.
func parseQuery(scheme, q string, allowed ...string) (map[string]string, error) {
	m := map[string]string{}
	if q == "" {
		return m, nil
	}
	for i, kv := range strings.Split(q, "&") {
		k, v, ok := strings.Cut(kv, "=")
		if !ok || k == "" {
			return nil, fmt.Errorf("%w: %s: query parameter %d is not name=value", ErrInvalidURI, scheme, i+1)
		}
		found := false
		for _, a := range allowed {
			found = found || a == k
		}
		if !found {
			return nil, fmt.Errorf("%w: %s: query parameter %d is not one of %s", ErrInvalidURI, scheme, i+1, strings.Join(allowed, ", "))
		}
		if _, dup := m[k]; dup {
			return nil, fmt.Errorf("%w: %s: query parameter %q repeated", ErrInvalidURI, scheme, k)
		}
		dv, err := url.PathUnescape(v)
		if err != nil {
			return nil, fmt.Errorf("%w: %s: query parameter %q: bad percent escape", ErrInvalidURI, scheme, k)
		}
		m[k] = dv
	}
	return m, nil
}

// validateEndpoint accepts an absolute http(s) URL with a host and
// nothing that could hold a secret (user info, query, fragment).
func validateEndpoint(scheme, ep string) error {
	u, err := url.Parse(ep)
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" ||
		u.User != nil || u.RawQuery != "" || u.Fragment != "" || u.Opaque != "" {
		return fmt.Errorf("%w: %s: endpoint must be an http(s) URL with a host and no user info, query or fragment", ErrInvalidURI, scheme)
	}
	return nil
}

// CheckTransport refuses an endpoint override that would send keys in
// clear. Sealing hands the provider the plaintext tenant key (L2), so an
// awskms endpoint must be https://. Plain http:// is accepted only when dev
// is set — the switch that also admits file:// anchors (-dev-anchor,
// Options.Development) — and only to a loopback host (localhost, 127.0.0.0/8,
// ::1): an emulator such as local-kms on the same machine, where the key
// never crosses a network. Governance (tenant create, set-anchor) and the
// region (tenant create, rekey) call it before anything is stored or
// proposed, and Open calls it before a provider is made, so a URI stored
// before the check existed is refused too. The error wraps ErrPlainEndpoint
// and names the fix.
//
// The other schemes cannot name a plaintext transport: a gcpkms endpoint is
// a gRPC host:port dialled with TLS (only the node's own
// gcpkms.Options.ClientOptions can turn it off), and an azurekv vault is
// always reached at https://<vault-host>.
func CheckTransport(u URI, dev bool) error {
	a, ok := u.(*AWSKMSURI)
	if !ok || a.Endpoint == "" {
		return nil
	}
	ep, err := url.Parse(a.Endpoint)
	if err != nil {
		return fmt.Errorf("%w: awskms: malformed endpoint", ErrInvalidURI)
	}
	if ep.Scheme == "https" {
		return nil
	}
	if dev && isLoopback(ep.Hostname()) {
		return nil
	}
	return fmt.Errorf("%w: awskms: an http:// endpoint would send the tenant key to KMS in clear; give an https:// endpoint "+
		"(plain http:// is accepted only for an emulator on a loopback address, on a node started with -dev-anchor)", ErrPlainEndpoint)
}

// isLoopback says whether host is "localhost" or a loopback IP address.
func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// ---- awskms ----

// AWSKMSURI is awskms://<key>[?region=R][&endpoint=URL].
//
// Key is a key ARN (arn:aws:kms:eu-west-1:111122223333:key/<id>), an alias
// ARN, "alias/<name>", or a key id (a UUID or an "mrk-" multi-Region id).
// Region defaults to the ARN's region; given both, they must agree.
// Endpoint overrides the service endpoint (local-kms, VPC endpoints).
type AWSKMSURI struct {
	Key      string
	Region   string
	Endpoint string
}

var (
	awsARNRE   = regexp.MustCompile(`^arn:(aws|aws-cn|aws-us-gov|aws-iso|aws-iso-b|aws-iso-e|aws-iso-f|aws-eusc):kms:([a-z0-9-]+):([0-9]{12}):(key/[A-Za-z0-9-]{1,128}|alias/[A-Za-z0-9/_-]{1,250})$`)
	awsAliasRE = regexp.MustCompile(`^alias/[A-Za-z0-9/_-]{1,250}$`)
	awsKeyIDRE = regexp.MustCompile(`^([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}|mrk-[0-9a-f]{32})$`)
	awsRegion  = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$`)
)

func parseAWSKMS(rest string) (*AWSKMSURI, error) {
	key, q, _ := strings.Cut(rest, "?")
	params, err := parseQuery(SchemeAWSKMS, q, "region", "endpoint")
	if err != nil {
		return nil, err
	}
	u := &AWSKMSURI{Key: key, Region: params["region"], Endpoint: params["endpoint"]}
	if strings.HasPrefix(key, "alias/aws/") {
		return nil, fmt.Errorf("%w: awskms: AWS managed keys (alias/aws/...) can not be used", ErrInvalidURI)
	}
	if m := awsARNRE.FindStringSubmatch(key); m != nil {
		if u.Region == "" {
			u.Region = m[2]
		} else if u.Region != m[2] {
			return nil, fmt.Errorf("%w: awskms: region parameter differs from the key ARN's region", ErrInvalidURI)
		}
	} else if !awsAliasRE.MatchString(key) && !awsKeyIDRE.MatchString(key) {
		return nil, fmt.Errorf("%w: awskms: key must be a key or alias ARN, alias/NAME or a key id", ErrInvalidURI)
	}
	if u.Region != "" && !awsRegion.MatchString(u.Region) {
		return nil, fmt.Errorf("%w: awskms: region is not an AWS region name", ErrInvalidURI)
	}
	if u.Endpoint != "" {
		if err := validateEndpoint(SchemeAWSKMS, u.Endpoint); err != nil {
			return nil, err
		}
	}
	return u, nil
}

func (u *AWSKMSURI) Scheme() string  { return SchemeAWSKMS }
func (u *AWSKMSURI) KeyName() string { return u.Key }
func (u *AWSKMSURI) String() string {
	q := url.Values{}
	if u.Region != "" {
		q.Set("region", u.Region)
	}
	if u.Endpoint != "" {
		q.Set("endpoint", u.Endpoint)
	}
	return withQuery("awskms://"+u.Key, q)
}

func withQuery(s string, q url.Values) string {
	if len(q) == 0 {
		return s
	}
	return s + "?" + q.Encode()
}

// ---- gcpkms ----

// GCPKMSURI is
// gcpkms://projects/P/locations/L/keyRings/R/cryptoKeys/K[?endpoint=HOST:PORT].
//
// It names a symmetric ENCRYPT_DECRYPT crypto key; Cloud KMS encrypts with
// its primary version and finds the version itself on decrypt, so a
// version is not part of the URI.
type GCPKMSURI struct {
	Project, Location, KeyRing, CryptoKey string
	// Endpoint overrides the gRPC endpoint, host:port.
	Endpoint string
}

var (
	gcpProjectRE = regexp.MustCompile(`^([a-z][a-z0-9.-]{0,62}:)?[a-z][a-z0-9-]{4,28}[a-z0-9]$`)
	gcpLocRE     = regexp.MustCompile(`^[a-z][a-z0-9-]{0,62}$`)
	gcpIDRE      = regexp.MustCompile(`^[A-Za-z0-9_-]{1,63}$`)
)

func parseGCPKMS(rest string) (*GCPKMSURI, error) {
	p, q, _ := strings.Cut(rest, "?")
	params, err := parseQuery(SchemeGCPKMS, q, "endpoint")
	if err != nil {
		return nil, err
	}
	seg := strings.Split(p, "/")
	if len(seg) != 8 || seg[0] != "projects" || seg[2] != "locations" || seg[4] != "keyRings" || seg[6] != "cryptoKeys" {
		return nil, fmt.Errorf("%w: gcpkms: want projects/P/locations/L/keyRings/R/cryptoKeys/K", ErrInvalidURI)
	}
	u := &GCPKMSURI{Project: seg[1], Location: seg[3], KeyRing: seg[5], CryptoKey: seg[7], Endpoint: params["endpoint"]}
	switch {
	case !gcpProjectRE.MatchString(u.Project):
		return nil, fmt.Errorf("%w: gcpkms: bad project id", ErrInvalidURI)
	case !gcpLocRE.MatchString(u.Location):
		return nil, fmt.Errorf("%w: gcpkms: bad location", ErrInvalidURI)
	case !gcpIDRE.MatchString(u.KeyRing):
		return nil, fmt.Errorf("%w: gcpkms: bad key ring id", ErrInvalidURI)
	case !gcpIDRE.MatchString(u.CryptoKey):
		return nil, fmt.Errorf("%w: gcpkms: bad crypto key id", ErrInvalidURI)
	}
	if u.Endpoint != "" {
		if _, port, err := net.SplitHostPort(u.Endpoint); err != nil || port == "" {
			return nil, fmt.Errorf("%w: gcpkms: endpoint must be host:port", ErrInvalidURI)
		}
	}
	return u, nil
}

// Name returns the Cloud KMS resource name,
// "projects/P/locations/L/keyRings/R/cryptoKeys/K".
func (u *GCPKMSURI) Name() string {
	return "projects/" + u.Project + "/locations/" + u.Location + "/keyRings/" + u.KeyRing + "/cryptoKeys/" + u.CryptoKey
}

func (u *GCPKMSURI) Scheme() string  { return SchemeGCPKMS }
func (u *GCPKMSURI) KeyName() string { return u.Name() }
func (u *GCPKMSURI) String() string {
	q := url.Values{}
	if u.Endpoint != "" {
		q.Set("endpoint", u.Endpoint)
	}
	return withQuery("gcpkms://"+u.Name(), q)
}

// ---- azurekv ----

// AzureKVURI is azurekv://<vault-host>/keys/<name>[/<version>]: a key in
// an Azure Key Vault (myvault.vault.azure.net) or Managed HSM
// (myhsm.managedhsm.azure.net). Without a version, wrapkey uses the key's
// current version, and the provider records the version it used in the
// sealed blob so that unwrapkey finds it after a rotation.
type AzureKVURI struct {
	Vault   string // host[:port]
	Name    string
	Version string // empty for the current version
}

var (
	azHostRE    = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(:[0-9]{1,5})?$`)
	azNameRE    = regexp.MustCompile(`^[A-Za-z0-9-]{1,127}$`)
	azVersionRE = regexp.MustCompile(`^[A-Za-z0-9]{1,64}$`)
)

func parseAzureKV(rest string) (*AzureKVURI, error) {
	if strings.ContainsAny(rest, "?#@") {
		return nil, fmt.Errorf("%w: azurekv: no query, fragment or user info allowed", ErrInvalidURI)
	}
	seg := strings.Split(rest, "/")
	if (len(seg) != 3 && len(seg) != 4) || seg[1] != "keys" {
		return nil, fmt.Errorf("%w: azurekv: want azurekv://VAULT-HOST/keys/NAME[/VERSION]", ErrInvalidURI)
	}
	u := &AzureKVURI{Vault: strings.ToLower(seg[0]), Name: seg[2]}
	if len(seg) == 4 {
		u.Version = seg[3]
		if !azVersionRE.MatchString(u.Version) {
			return nil, fmt.Errorf("%w: azurekv: bad key version", ErrInvalidURI)
		}
	}
	if !azHostRE.MatchString(u.Vault) {
		return nil, fmt.Errorf("%w: azurekv: bad vault host", ErrInvalidURI)
	}
	if !azNameRE.MatchString(u.Name) {
		return nil, fmt.Errorf("%w: azurekv: bad key name (1-127 of [A-Za-z0-9-])", ErrInvalidURI)
	}
	return u, nil
}

// VaultURL returns "https://<vault-host>", the azkeys client's vault URL.
func (u *AzureKVURI) VaultURL() string { return "https://" + u.Vault }

func (u *AzureKVURI) Scheme() string { return SchemeAzureKV }
func (u *AzureKVURI) KeyName() string {
	s := u.Vault + "/keys/" + u.Name
	if u.Version != "" {
		s += "/" + u.Version
	}
	return s
}
func (u *AzureKVURI) String() string { return "azurekv://" + u.KeyName() }

// ---- file ----

// FileURI is file:///abs/path/root.key[?create=1]: the development anchor
// (package anchor/file). Create records the URI's create=1, which no
// longer makes anything by itself: only anchor.Options.Create, set by
// `krypton dev` and tests, lets the file provider make a key file (a URI
// comes from a request; a node must not create files because one asked).
type FileURI struct {
	Path   string
	Create bool
}

func parseFile(s string) (*FileURI, error) {
	u, err := url.Parse(s)
	if err != nil {
		return nil, fmt.Errorf("%w: file: malformed", ErrInvalidURI)
	}
	if u.Host != "" && u.Host != "localhost" || u.User != nil || u.Fragment != "" || u.Opaque != "" {
		return nil, fmt.Errorf("%w: file: want file:///absolute/path (no host, user or fragment)", ErrInvalidURI)
	}
	if u.Path == "" || !path.IsAbs(u.Path) || path.Clean(u.Path) != u.Path || strings.HasSuffix(u.Path, "/") {
		return nil, fmt.Errorf("%w: file: path must be absolute and clean (no ., .., //, trailing /)", ErrInvalidURI)
	}
	params, err := parseQuery(SchemeFile, u.RawQuery, "create")
	if err != nil {
		return nil, err
	}
	f := &FileURI{Path: u.Path}
	switch params["create"] {
	case "", "0", "false", "no":
	case "1", "true", "yes":
		f.Create = true
	default:
		return nil, fmt.Errorf("%w: file: create must be 1 or 0", ErrInvalidURI)
	}
	return f, nil
}

func (u *FileURI) Scheme() string  { return SchemeFile }
func (u *FileURI) KeyName() string { return u.Path }
func (u *FileURI) String() string {
	s := (&url.URL{Scheme: "file", Path: u.Path}).String()
	if !strings.HasPrefix(s, "file://") { // url.URL omits "//" for an empty host
		s = "file://" + strings.TrimPrefix(s, "file:")
	}
	if u.Create {
		s += "?create=1"
	}
	return s
}
