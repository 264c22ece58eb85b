package gateway_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"crypto/tls"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/kryptonkms/krypton/cluster/clustertest"
	"github.com/kryptonkms/krypton/gateway"
	"github.com/kryptonkms/krypton/gateway/xks"
	"github.com/kryptonkms/krypton/region/regiontest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// The request examples of the XKS Proxy API specification (aws/aws-kms-xksproxy-api-spec,
// spec/xks_proxy_api_spec.md), as printed there. Three of them lack a comma between two members
// (after kmsKeyArn, kmsRequestId and ciphertextMetadata): those commas are added here, nothing
// else is changed. The Decrypt example's ciphertext is another proxy's, so it can only be refused.
const (
	specGetKeyMetadataExample = `{
    "requestMetadata": {
        "awsPrincipalArn": "arn:aws:iam::123456789012:user/Alice",
        "kmsKeyArn": "arn:aws:kms:us-east-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "kmsOperation": "DescribeKey",
        "kmsRequestId": "4112f4d6-db54-4af4-ae30-c55a22a8dfae",
        "kmsViaService": "ebs"      
    }
}`
	specEncryptExample = `{
    "requestMetadata": {
        "awsPrincipalArn": "arn:aws:iam::123456789012:user/Alice",
        "kmsKeyArn": "arn:aws:kms:us-east-2:123456789012:/key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "kmsOperation": "Encrypt",
        "kmsRequestId": "4112f4d6-db54-4af4-ae30-c55a22a8dfae",
        "kmsViaService": "ebs"
    }, 
    "additionalAuthenticatedData": "cHJvamVjdD1uaWxlLGRlcGFydG1lbnQ9bWFya2V0aW5n",
    "plaintext": "SGVsbG8gV29ybGQh",
    "encryptionAlgorithm": "AES_GCM",
    "ciphertextDataIntegrityValueAlgorithm": "SHA_256"
}`
	specDecryptExample = `{
    "requestMetadata": { 
        "awsPrincipalArn": "arn:aws:iam::123456789012:user/Alice",
        "kmsKeyArn": "arn:aws:kms:us-east-2:123456789012:/key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "kmsOperation": "Decrypt",
        "kmsRequestId": "5112f4d6-db54-4af4-ae30-c55a22a8dfae",
        "kmsViaService": "ebs"
    },
    "additionalAuthenticatedData": "cHJvamVjdD1uaWxlLGRlcGFydG1lbnQ9bWFya2V0aW5n",
    "encryptionAlgorithm": "AES_GCM",
    "ciphertext": "ghxkK1txeDNn3q8Y",
    "ciphertextMetadata": "a2V5X3ZlcnNpb249MQ==",
    "initializationVector": "HMrlRw85cAJUd5Ax",
    "authenticationTag": "vBxN2ncH1oEkR8WVXpmyYQ=="
}`
	specGetHealthStatusExample = `{
    "requestMetadata": {
        "kmsRequestId": "4112f4d6-db54-4af4-ae30-c55a22a8dfae",
        "kmsOperation": "CreateCustomKeyStore"
    }
}`
	// Appendix D's Encrypt request (sent there with curl --aws-sigv4), kmsOperation GenerateDataKey.
	specCurlEncryptExample = `{
    "requestMetadata": {
        "awsPrincipalArn": "arn:aws:iam::123456789012:user/Alice",
        "kmsKeyArn": "arn:aws:kms:us-east-2:123456789012:/key/1234abcd-12ab-34cd-56ef-1234567890ab",
        "kmsOperation": "GenerateDataKey",
        "kmsRequestId": "4112f4d6-db54-4af4-ae30-c55a22a8dfae"
    },
    "plaintext": "SGVsbG8gV29ybGQh",
    "encryptionAlgorithm": "AES_GCM"
}`
)

// TestXKSSpecExamples sends the specification's request examples, and the inputs it says a proxy
// must accept, through a real gateway and region, signed by aws-sdk-go-v2's SigV4 signer: each
// example gets the answer the specification describes, and the minimum sizes, ARN lengths, new
// kmsOperation values and new requestMetadata fields it names are accepted. The error cases of
// the specification's table that a request alone can cause are checked too; TestXKS has the
// others, TestXKSDependencyErrors and TestXKSKillSwitch those that need Krypton to fail or refuse.
func TestXKSSpecExamples(t *testing.T) {
	t.Parallel()
	r := regiontest.Start(t, 1)
	setupTenant(t, r, "acme", "payments")
	e := startXKS(t, r, "acme", "payments", nil)
	metadataPath, encPath, decPath := "/keys/"+xksKey+"/metadata", "/keys/"+xksKey+"/encrypt", "/keys/"+xksKey+"/decrypt"

	t.Run("GetKeyMetadata example", func(t *testing.T) {
		code, out := e.post(t, "POST", metadataPath, []byte(specGetKeyMetadataExample), e.good())
		if code != 200 || out["keySpec"] != "AES_256" || out["keyStatus"] != "ENABLED" {
			t.Fatalf("%d %v", code, out)
		}
		usage, _ := out["keyUsage"].([]any)
		if len(usage) < 2 || len(usage) > 10 || !contains(usage, "ENCRYPT") || !contains(usage, "DECRYPT") {
			t.Errorf("keyUsage %v: want ENCRYPT and DECRYPT, at most ten values", out["keyUsage"])
		}
		// CreateKey's call has no kmsKeyArn (the key's ARN does not exist yet).
		body := strings.Replace(specGetKeyMetadataExample, `"DescribeKey"`, `"CreateKey"`, 1)
		body = strings.Replace(body, `"kmsKeyArn": "arn:aws:kms:us-east-2:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",`, "", 1)
		if code, out := e.post(t, "POST", metadataPath, []byte(body), e.good()); code != 200 {
			t.Errorf("GetKeyMetadata for CreateKey, without kmsKeyArn: %d %v", code, out)
		}
	})
	t.Run("Encrypt example, then Decrypt", func(t *testing.T) {
		code, enc := e.post(t, "POST", encPath, []byte(specEncryptExample), e.good())
		if code != 200 {
			t.Fatalf("%d %v", code, enc)
		}
		aad := []byte("project=nile,department=marketing")
		ct, iv, tag, md := unb64(t, enc["ciphertext"]), unb64(t, enc["initializationVector"]), unb64(t, enc["authenticationTag"]), unb64(t, enc["ciphertextMetadata"])
		if len(ct) != len("Hello World!") || (len(iv) != 12 && len(iv) != 16) || len(tag) != 16 || len(md) > 20 {
			t.Fatalf("sizes: ciphertext %d, IV %d, tag %d, metadata %d", len(ct), len(iv), len(tag), len(md))
		}
		// Appendix C: CDIV = SHA-256(AAD || ciphertextMetadata || IV || ciphertext || tag).
		h := sha256.New()
		for _, p := range [][]byte{aad, md, iv, ct, tag} {
			h.Write(p)
		}
		if !bytes.Equal(unb64(t, enc["ciphertextDataIntegrityValue"]), h.Sum(nil)) {
			t.Error("ciphertextDataIntegrityValue is not Appendix C's hash")
		}
		// The Decrypt example's shape with this proxy's answer.
		var f map[string]any
		if err := json.Unmarshal([]byte(specDecryptExample), &f); err != nil {
			t.Fatal(err)
		}
		for _, k := range []string{"ciphertext", "ciphertextMetadata", "initializationVector", "authenticationTag"} {
			f[k] = enc[k]
		}
		body, _ := json.Marshal(f)
		code, dec := e.post(t, "POST", decPath, body, e.good())
		if code != 200 || string(unb64(t, dec["plaintext"])) != "Hello World!" {
			t.Fatalf("Decrypt: %d %v", code, dec)
		}
	})
	t.Run("Decrypt example (another proxy's ciphertext)", func(t *testing.T) {
		code, out := e.post(t, "POST", decPath, []byte(specDecryptExample), e.good())
		wantError(t, "the specification's Decrypt example", code, out, 400, xks.InvalidCiphertextException)
	})
	t.Run("GetHealthStatus example", func(t *testing.T) {
		code, out := e.post(t, "POST", "/health", []byte(specGetHealthStatusExample), e.good())
		if code != 200 {
			t.Fatalf("%d %v", code, out)
		}
		for _, k := range []string{"xksProxyVendor", "xksProxyModel", "ekmVendor"} {
			if s, _ := out[k].(string); s == "" {
				t.Errorf("%s missing: %v", k, out)
			}
		}
		if n, _ := out["xksProxyFleetSize"].(float64); n < 1 {
			t.Errorf("xksProxyFleetSize %v", out["xksProxyFleetSize"])
		}
		fleet, _ := out["ekmFleetDetails"].([]any)
		if len(fleet) < 1 || len(fleet) > 10 {
			t.Fatalf("ekmFleetDetails has %d entries, want 1 to 10", len(fleet))
		}
		for _, d := range fleet {
			m, _ := d.(map[string]any)
			if m["id"] == "" || m["model"] == "" || !contains([]any{"ACTIVE", "DEGRADED", "UNAVAILABLE"}, m["healthStatus"]) {
				t.Errorf("ekmFleetDetails entry %v", d)
			}
		}
	})

	t.Run("what a proxy must accept", func(t *testing.T) {
		arn := "arn:aws:iam::123456789012:role/" + strings.Repeat("r", 2048-len("arn:aws:iam::123456789012:role/"))
		for _, tc := range []struct {
			name   string
			path   string
			fields map[string]any
		}{
			{"4300 bytes of plaintext and 8192 of AAD", encPath, map[string]any{"plaintext": b64(make([]byte, 4300)), "additionalAuthenticatedData": b64(make([]byte, 8192)), "encryptionAlgorithm": "AES_GCM"}},
			{"an ARN of 2048 characters", encPath, map[string]any{"requestMetadata": map[string]any{"awsPrincipalArn": arn, "kmsKeyArn": xksMetadata["kmsKeyArn"], "kmsOperation": "Encrypt", "kmsRequestId": "r1"}, "plaintext": b64([]byte("x")), "encryptionAlgorithm": "AES_GCM"}},
			{"a kmsOperation of the future", encPath, map[string]any{"requestMetadata": map[string]any{"awsPrincipalArn": "AWS Internal", "kmsKeyArn": xksMetadata["kmsKeyArn"], "kmsOperation": "BulkEncrypt", "kmsRequestId": "r2"}, "plaintext": b64([]byte("x")), "encryptionAlgorithm": "AES_GCM"}},
			{"requestMetadata fields of the future (Appendix B)", metadataPath, map[string]any{"requestMetadata": map[string]any{"awsPrincipalArn": "ec2.amazonaws.com", "kmsOperation": "DescribeKey", "kmsRequestId": "r3",
				"awsSourceVpc": "vpc-1", "awsSourceVpce": "vpce-1", "kmsRecipientAttestationImageSha384": "00", "SourceIdentity": "alice"}}},
		} {
			if code, out := e.post(t, "POST", tc.path, jsonBody(t, tc.fields), e.good()); code != 200 {
				t.Errorf("%s: %d %v", tc.name, code, out)
			}
		}
	})

	t.Run("errors a request alone causes", func(t *testing.T) {
		md := func(drop string) map[string]any {
			m := map[string]any{}
			for k, v := range xksMetadata {
				if k != drop {
					m[k] = v
				}
			}
			return m
		}
		big := make([]byte, xks.MaxBodySize+1)
		for i := range big {
			big[i] = ' '
		}
		copy(big, jsonBody(t, map[string]any{"plaintext": b64([]byte("x")), "encryptionAlgorithm": "AES_GCM"}))
		for _, tc := range []struct {
			name, path string
			body       []byte
			code       int
			errName    string
		}{
			{"AAD over the proxy's limit", encPath, jsonBody(t, map[string]any{"plaintext": b64([]byte("x")), "encryptionAlgorithm": "AES_GCM", "additionalAuthenticatedData": b64(make([]byte, xks.MaxAADSize+1))}), 501, xks.UnsupportedOperationException},
			{"body over the proxy's limit", encPath, big, 501, xks.UnsupportedOperationException},
			{"no kmsRequestId", metadataPath, jsonBody(t, map[string]any{"requestMetadata": md("kmsRequestId")}), 400, xks.ValidationException},
			{"no kmsOperation", "/health", jsonBody(t, map[string]any{"requestMetadata": map[string]any{"kmsRequestId": "h"}}), 400, xks.ValidationException},
			{"no awsPrincipalArn", metadataPath, jsonBody(t, map[string]any{"requestMetadata": md("awsPrincipalArn")}), 400, xks.ValidationException},
			{"Encrypt without kmsKeyArn", encPath, jsonBody(t, map[string]any{"requestMetadata": md("kmsKeyArn"), "plaintext": b64([]byte("x")), "encryptionAlgorithm": "AES_GCM"}), 400, xks.ValidationException},
			{"no encryptionAlgorithm", encPath, jsonBody(t, map[string]any{"plaintext": b64([]byte("x"))}), 400, xks.ValidationException},
			{"Decrypt without an IV", decPath, jsonBody(t, map[string]any{"encryptionAlgorithm": "AES_GCM", "ciphertext": b64([]byte("x")), "authenticationTag": b64(make([]byte, 16))}), 400, xks.InvalidCiphertextException},
			{"Decrypt with an 8-byte IV", decPath, jsonBody(t, map[string]any{"encryptionAlgorithm": "AES_GCM", "ciphertext": b64([]byte("x")), "initializationVector": b64(make([]byte, 8)), "authenticationTag": b64(make([]byte, 16))}), 400, xks.InvalidCiphertextException},
			{"ciphertextMetadata over 20 bytes", decPath, jsonBody(t, map[string]any{"encryptionAlgorithm": "AES_GCM", "ciphertext": b64([]byte("x")), "initializationVector": b64(make([]byte, 12)), "authenticationTag": b64(make([]byte, 16)), "ciphertextMetadata": b64(make([]byte, 21))}), 400, xks.InvalidCiphertextException},
			{"a path prefix of another key store", "", []byte(specGetHealthStatusExample), 404, xks.InvalidURIPathException},
		} {
			url := e.base + tc.path
			if tc.path == "" {
				url = strings.Replace(e.base, xksPrefix, "/keystores/other", 1) + "/health"
			}
			code, out := e.postURL(t, url, tc.body, e.good())
			wantError(t, tc.name, code, out, tc.code, tc.errName)
		}
	})

	t.Run("HTTP/1.1 and TLS 1.2 with the specification's suite", func(t *testing.T) {
		for _, suite := range []uint16{tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384} {
			tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: e.ca.pool(), MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{suite}},
				TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}} // no HTTP/2
			c := &xksEnv{base: e.base, secrets: e.secrets, client: &http.Client{Transport: tr, Timeout: 30 * time.Second}}
			code, out := c.post(t, "POST", "/health", []byte(specGetHealthStatusExample), e.good())
			tr.CloseIdleConnections()
			if code != 200 {
				t.Errorf("HTTP/1.1 over TLS 1.2 with %s: %d %v", tls.CipherSuiteName(suite), code, out)
			}
		}
	})
}

// postURL is post to a whole URL.
func (e *xksEnv) postURL(t testing.TB, url string, body []byte, s signer) (int, map[string]any) {
	t.Helper()
	base := e.base
	defer func() { e.base = base }()
	e.base = ""
	return e.post(t, "POST", url, body, s)
}

func contains(list []any, v any) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// TestXKSCurl sends Appendix D's requests with curl --aws-sigv4, a SigV4 signer independent of the
// AWS SDK (the specification: "XKS proxies SHOULD ensure they can handle XKS API requests
// generated via curl"), with Appendix D's own access key ID and secret, over HTTP/2 and HTTP/1.1.
func TestXKSCurl(t *testing.T) {
	t.Parallel()
	curl, err := exec.LookPath("curl")
	if err != nil {
		if os.Getenv("KRYPTON_REQUIRE_PEERS") != "" {
			t.Fatal("curl is not installed (Debian package curl) and KRYPTON_REQUIRE_PEERS is set")
		}
		t.Skip("curl is not installed (Debian package curl)")
	}
	r := regiontest.Start(t, 1)
	setupTenant(t, r, "acme", "payments")
	e := startXKS(t, r, "acme", "payments", nil)
	const akid, secret = "HGIE2BUAFNDMBCMSQVWLGCEXAMPLE", "VU6W2byoiBrhDqNGbx703oL0syCAmhlQgwNUT123456"
	e.secrets[akid] = secret
	writeCreds(t, e.creds, e.secrets)
	if err := e.g.XKS().Reload(); err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, e.ca.pem(), 0o644); err != nil {
		t.Fatal(err)
	}
	run := func(httpVersion, path, body string) (int, map[string]any) {
		t.Helper()
		bodyFile := filepath.Join(dir, "body.json")
		if err := os.WriteFile(bodyFile, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		// As Appendix D, with the test CA and an HTTP version chosen; -w appends the status.
		cmd := exec.CommandContext(ctx, curl, "-sS", httpVersion, "--cacert", caFile,
			"--aws-sigv4", "aws:amz:"+xksRegion+":kms-xks-proxy", "--user", akid+":"+secret,
			"-X", "POST", "-H", "Content-Type:application/json", "--data", "@"+bodyFile,
			"-w", "\n%{http_code} %{http_version}", e.base+path)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("curl: %v\n%s", err, out)
		}
		resp, status, _ := strings.Cut(string(out), "\n")
		var code int
		var version string
		if _, err := fmt.Sscan(status, &code, &version); err != nil {
			t.Fatalf("curl's output %q", out)
		}
		want := map[string]string{"--http2": "2", "--http1.1": "1.1"}[httpVersion]
		if version != want {
			t.Errorf("curl %s spoke HTTP/%s", httpVersion, version)
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(resp), &m); err != nil {
			t.Fatalf("curl: answer %q is not JSON", resp)
		}
		return code, m
	}
	for _, v := range []string{"--http2", "--http1.1"} {
		t.Run(strings.TrimPrefix(v, "--"), func(t *testing.T) {
			code, enc := run(v, "/keys/"+xksKey+"/encrypt", specCurlEncryptExample)
			if code != 200 || len(unb64(t, enc["ciphertext"])) != len("Hello World!") {
				t.Fatalf("Encrypt: %d %v", code, enc)
			}
			f := decryptBody(t, enc, nil)
			f["requestMetadata"] = xksMetadata
			body, _ := json.Marshal(f)
			code, dec := run(v, "/keys/"+xksKey+"/decrypt", string(body))
			if code != 200 || string(unb64(t, dec["plaintext"])) != "Hello World!" {
				t.Fatalf("Decrypt: %d %v", code, dec)
			}
			if code, out := run(v, "/health", `{"requestMetadata":{"kmsOperation":"KmsHealthCheck","kmsRequestId":"1124f4d6-db54-4af4-ae30-c55a22a8abcd"}}`); code != 200 {
				t.Fatalf("GetHealthStatus: %d %v", code, out)
			}
		})
	}
	// A wrong secret in curl's signature is AuthenticationFailedException.
	e.secrets[akid] = secretOf(t)
	writeCreds(t, e.creds, e.secrets)
	if err := e.g.XKS().Reload(); err != nil {
		t.Fatal(err)
	}
	code, out := run("--http2", "/health", specGetHealthStatusExample)
	wantError(t, "curl signing with a secret the proxy does not hold", code, out, 401, xks.AuthenticationFailedException)
}

// TestXKSDependencyErrors causes the errors of the specification's table that come from Krypton
// or from load rather than from the request: ThrottlingException (a request beyond MaxInFlight, and
// the tenant's quota in Krypton),
// AccessDeniedException (the region refuses the gateway the key: the keys file of another
// service's gateway), InternalException (a damaged entry of the keys file) and
// DependencyTimeoutException (no region node answers), each with its HTTP status.
func TestXKSDependencyErrors(t *testing.T) {
	t.Parallel()
	r := regiontest.Start(t, 1)
	setupTenant(t, r, "acme", "payments", "ledger")
	ledger := startXKS(t, r, "acme", "ledger", nil)
	// The payments gateway is given the ledger gateway's keys file, plus an entry that is not a
	// Krypton blob at all.
	raw, err := os.ReadFile(ledger.keys)
	if err != nil {
		t.Fatal(err)
	}
	var kf struct {
		Version int               `json:"version"`
		Keys    map[string]string `json:"keys"`
	}
	if err := json.Unmarshal(raw, &kf); err != nil {
		t.Fatal(err)
	}
	kf.Keys["damaged"] = b64(bytes.Repeat([]byte{0x5a}, 96))
	keysFile := filepath.Join(t.TempDir(), "xks-keys.json")
	raw, _ = json.Marshal(kf)
	if err := os.WriteFile(keysFile, raw, 0o600); err != nil {
		t.Fatal(err)
	}
	e := startXKS(t, r, "acme", "payments", func(c *gateway.Config) {
		c.XKS.KeysPath = keysFile
		c.XKS.MaxInFlight = 1
		c.XKS.HealthMaxAge = time.Millisecond
	})
	// A second proxy with a short deadline for the region's answers, for DependencyTimeoutException
	// (the first keeps startXKS's long one, so that a busy machine's slow answer is not taken for
	// that error).
	short := startXKS(t, r, "acme", "payments", func(c *gateway.Config) {
		c.XKS.Timeout = 2 * time.Second
		c.XKS.HealthMaxAge = time.Millisecond
	})
	encBody := jsonBody(t, map[string]any{"plaintext": b64([]byte("data key")), "encryptionAlgorithm": "AES_GCM"})

	t.Run("ThrottlingException", func(t *testing.T) {
		// A request whose body is still arriving holds the only slot.
		body := []byte(specGetHealthStatusExample)
		pr, pw := io.Pipe()
		req, err := http.NewRequestWithContext(ctxT(t), "POST", e.base+"/health", pr)
		if err != nil {
			t.Fatal(err)
		}
		req.ContentLength = int64(len(body))
		req.Header.Set("Content-Type", "application/json")
		sum := sha256.Sum256(body)
		s := e.good()
		if err := v4.NewSigner().SignHTTP(ctxT(t), aws.Credentials{AccessKeyID: s.akid, SecretAccessKey: s.secret}, req,
			hex.EncodeToString(sum[:]), s.service, s.region, time.Now()); err != nil {
			t.Fatal(err)
		}
		held := make(chan int, 1)
		go func() {
			resp, err := e.client.Do(req)
			if err != nil {
				held <- 0
				return
			}
			resp.Body.Close()
			held <- resp.StatusCode
		}()
		if _, err := pw.Write(body[:8]); err != nil {
			t.Fatal(err)
		}
		var code int
		var out map[string]any
		clustertest.Eventually(t, 20*time.Second, "a request refused while another holds the only slot", func() bool {
			code, out = e.post(t, "POST", "/health", []byte(specGetHealthStatusExample), e.good())
			return code != 200
		})
		wantError(t, "a request beyond MaxInFlight", code, out, 429, xks.ThrottlingException)
		pw.Write(body[8:])
		pw.Close()
		if c := <-held; c != 200 {
			t.Errorf("the request that held the slot: %d", c)
		}
		if code, out := e.post(t, "POST", "/health", []byte(specGetHealthStatusExample), e.good()); code != 200 {
			t.Errorf("after the slot was freed: %d %v", code, out)
		}
	})
	t.Run("AccessDeniedException", func(t *testing.T) {
		code, out := e.post(t, "POST", "/keys/"+xksKey+"/encrypt", encBody, e.good())
		wantError(t, "another service's external key", code, out, 403, xks.AccessDeniedException)
	})
	t.Run("InternalException", func(t *testing.T) {
		code, out := e.post(t, "POST", "/keys/damaged/encrypt", encBody, e.good())
		wantError(t, "a damaged keys file entry", code, out, 500, xks.InternalException)
	})
	t.Run("ThrottlingException over the tenant's quota", func(t *testing.T) {
		// A key of this gateway's own (xksKey here is the ledger gateway's).
		if _, err := e.g.XKS().CreateKey(ctxT(t), "own-key"); err != nil {
			t.Fatal(err)
		}
		if code, out := e.post(t, "POST", "/keys/own-key/encrypt", encBody, e.good()); code != 200 {
			t.Fatalf("Encrypt under the gateway's own key: %d %v", code, out)
		}
		if _, err := r.AdminClient(r.WaitLeader()).SetQuota(ctxT(t), &kv1.SetQuotaRequest{RequestId: "xks-quota", Tenant: "acme", Quota: &kv1.Quota{Rate: 1, Burst: 2}}); err != nil {
			t.Fatal(err)
		}
		var code int
		var out map[string]any
		clustertest.Eventually(t, 20*time.Second, "an Encrypt refused over the quota", func() bool {
			code, out = e.post(t, "POST", "/keys/own-key/encrypt", encBody, e.good())
			return code != 200
		})
		wantError(t, "an Encrypt over the tenant's quota", code, out, 429, xks.ThrottlingException)
	})
	t.Run("DependencyTimeoutException", func(t *testing.T) {
		r.Kill(0)
		for _, path := range []string{"/keys/" + xksKey + "/encrypt", "/health"} {
			body := encBody
			if path == "/health" {
				body = []byte(specGetHealthStatusExample)
			}
			code, out := short.post(t, "POST", path, body, short.good())
			wantError(t, path+" with no region node", code, out, 503, xks.DependencyTimeoutException)
		}
	})
}
