package gateway_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/tls"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kryptonkms/krypton/gateway"
	"github.com/kryptonkms/krypton/gateway/kmip/ttlv"
	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/region/regiontest"
)

// pykmipPython returns a Python interpreter that can import PyKMIP, or "".
func pykmipPython() string {
	for _, py := range []string{"/usr/bin/python3", "python3"} {
		if path, err := exec.LookPath(py); err == nil && exec.Command(path, "-c", "import kmip.pie.client").Run() == nil {
			return path
		}
	}
	return ""
}

// refusalScript tries to create a key and prints how it went.
const refusalScript = `
import sys
from kmip.core import enums
from kmip.pie import client as pie_client
host, port, cert, key, ca = sys.argv[1:6]
c = pie_client.ProxyKmipClient(hostname=host, port=int(port), cert=cert, key=key, ca=ca,
    kmip_version=enums.KMIPVersion.KMIP_1_4)
with c:
    try:
        c.create(enums.CryptographicAlgorithm.AES, 256)
        print("create: ok")
    except Exception as e:
        print("create: refused:", e)
`

// TestKMIPThroughGateway drives the gateway's KMIP front end with PyKMIP against a real region:
// the KMIP front end's own end-to-end script (create, encrypt, decrypt, attributes, revoke,
// destroy), then a client of another tenant, which the gateway refuses.
func TestKMIPThroughGateway(t *testing.T) {
	py := pykmipPython()
	if py == "" {
		if os.Getenv("KRYPTON_REQUIRE_PEERS") != "" {
			t.Fatal("PyKMIP is not installed (Debian package python3-pykmip) and KRYPTON_REQUIRE_PEERS is set")
		}
		t.Skip("PyKMIP is not installed (Debian package python3-pykmip)")
	}
	r := regiontest.Start(t, 3)
	setupTenant(t, r, "acme", "db")
	setupTenant(t, r, "other", "db")
	g := startGateway(t, r, "acme", "db", func(c *gateway.Config) { c.KMIPAddr = "127.0.0.1:0" })
	host, port, _ := net.SplitHostPort(g.KMIPAddr().String())

	dir := t.TempDir()
	caPath := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caPath, r.CA.CertPEM(), 0o644); err != nil {
		t.Fatal(err)
	}
	certFor := func(tenant string) (string, string) {
		cert, err := r.CA.IssueService(tenant, "db", time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		c, k := filepath.Join(dir, tenant+".pem"), filepath.Join(dir, tenant+".key")
		if err := cert.WriteFiles(c, k); err != nil {
			t.Fatal(err)
		}
		return c, k
	}
	run := func(args ...string) map[string]string {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, py, args...)
		cmd.Env = append(os.Environ(), "PYTHONDONTWRITEBYTECODE=1")
		out, err := cmd.CombinedOutput()
		t.Logf("%s:\n%s", filepath.Base(args[0]), out)
		if err != nil {
			t.Fatalf("%s: %v", args[0], err)
		}
		lines := map[string]string{}
		for _, l := range strings.Split(strings.TrimSpace(string(out)), "\n") {
			k, v, _ := strings.Cut(l, ": ")
			lines[k] = v
		}
		return lines
	}

	cert, key := certFor("acme")
	lines := run(filepath.Join("kmip", "testdata", "pykmip_e2e.py"), host, port, cert, key, caPath, "1.4", "through-gateway")
	for k, want := range map[string]string{
		"encrypt-decrypt-gcm":  "ok",
		"get":                  "32 bytes",
		"encrypt-after-revoke": "PERMISSION_DENIED",
		"destroy":              "state=DESTROYED",
	} {
		if lines[k] != want {
			t.Errorf("%s: got %q, want %q", k, lines[k], want)
		}
	}
	if _, ok := lines["done"]; !ok {
		t.Error("the script did not finish")
	}

	script := filepath.Join(dir, "refusal.py")
	if err := os.WriteFile(script, []byte(refusalScript), 0o644); err != nil {
		t.Fatal(err)
	}
	cert, key = certFor("other")
	if got := run(script, host, port, cert, key, caPath)["create"]; !strings.HasPrefix(got, "refused") {
		t.Errorf("a KMIP client of another tenant: create %q, want refused", got)
	}
}

// kmipConn is a bare KMIP 1.4 client over mutual TLS, built on package ttlv.
type kmipConn struct {
	t    *testing.T
	conn *tls.Conn
}

func dialKMIP(t *testing.T, r *regiontest.Region, g *gateway.Gateway, tenant, service string) *kmipConn {
	t.Helper()
	cert, err := r.CA.IssueService(tenant, service, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	conn, err := tls.Dial("tcp", g.KMIPAddr().String(), pki.ClientTLSConfig(r.CA.Pool(), cert.TLSCertificate(), "127.0.0.1"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return &kmipConn{t: t, conn: conn}
}

// do runs one operation and returns its response batch item.
func (c *kmipConn) do(op uint32, payload ...ttlv.Item) ttlv.Item {
	c.t.Helper()
	req := ttlv.Struct(ttlv.TagRequestMessage,
		ttlv.Struct(ttlv.TagRequestHeader,
			ttlv.Struct(ttlv.TagProtocolVersion, ttlv.Int(ttlv.TagProtocolVersionMajor, 1), ttlv.Int(ttlv.TagProtocolVersionMinor, 4)),
			ttlv.Int(ttlv.TagBatchCount, 1)),
		ttlv.Struct(ttlv.TagBatchItem, ttlv.Enum(ttlv.TagOperation, op), ttlv.Struct(ttlv.TagRequestPayload, payload...)))
	c.conn.SetDeadline(time.Now().Add(time.Minute))
	if _, err := c.conn.Write(ttlv.Marshal(req)); err != nil {
		c.t.Fatal(err)
	}
	raw, err := ttlv.ReadMessage(c.conn, 1<<22)
	if err != nil {
		c.t.Fatal(err)
	}
	resp, err := ttlv.Decode(raw, ttlv.DefaultLimits())
	if err != nil {
		c.t.Fatal(err)
	}
	bi := resp.Child(ttlv.TagBatchItem)
	if bi == nil {
		c.t.Fatal("no batch item in the response")
	}
	return *bi
}

// ok runs an operation that must succeed and returns its response payload.
func (c *kmipConn) ok(op uint32, payload ...ttlv.Item) ttlv.Item {
	c.t.Helper()
	bi := c.do(op, payload...)
	if st := bi.Child(ttlv.TagResultStatus); st == nil || st.Int != int64(ttlv.StatusSuccess) {
		msg := ""
		if m := bi.Child(ttlv.TagResultMessage); m != nil {
			msg = m.Text()
		}
		c.t.Fatalf("operation %#x failed: %s", op, msg)
	}
	return *bi.Child(ttlv.TagResponsePayload)
}

// reason runs an operation that must fail and returns its Result Reason.
func (c *kmipConn) reason(op uint32, payload ...ttlv.Item) uint32 {
	c.t.Helper()
	bi := c.do(op, payload...)
	if st := bi.Child(ttlv.TagResultStatus); st == nil || st.Int != int64(ttlv.StatusOperationFailed) {
		c.t.Fatalf("operation %#x did not fail", op)
	}
	return uint32(bi.Child(ttlv.TagResultReason).Int)
}

func (c *kmipConn) located() []string {
	c.t.Helper()
	var ids []string
	for _, u := range c.ok(ttlv.OpLocate).All(ttlv.TagUniqueIdentifier) {
		ids = append(ids, u.Text())
	}
	return ids
}

func (c *kmipConn) keyOf(id string) []byte {
	c.t.Helper()
	return c.ok(ttlv.OpGet, ttlv.Text(ttlv.TagUniqueIdentifier, id)).
		Child(ttlv.TagSymmetricKey).Child(ttlv.TagKeyBlock).Child(ttlv.TagKeyValue).Child(ttlv.TagKeyMaterial).Bytes
}

// registerPayload is a KMIP 1.4 Register of key as an AES key of bits named name.
func registerPayload(name string, alg uint32, bits int32, key []byte) []ttlv.Item {
	attr := func(n string, v ttlv.Item) ttlv.Item {
		v.Tag = ttlv.TagAttributeValue
		return ttlv.Struct(ttlv.TagAttribute, ttlv.Text(ttlv.TagAttributeName, n), v)
	}
	return []ttlv.Item{
		ttlv.Enum(ttlv.TagObjectType, ttlv.ObjectSymmetricKey),
		ttlv.Struct(ttlv.TagTemplateAttribute,
			attr("Cryptographic Usage Mask", ttlv.Int(0, int32(ttlv.UsageEncrypt|ttlv.UsageDecrypt))),
			attr("Name", ttlv.Struct(0, ttlv.Text(ttlv.TagNameValue, name), ttlv.Enum(ttlv.TagNameType, ttlv.NameUninterpretedText)))),
		ttlv.Struct(ttlv.TagSymmetricKey, ttlv.Struct(ttlv.TagKeyBlock,
			ttlv.Enum(ttlv.TagKeyFormatType, ttlv.KeyFormatRaw),
			ttlv.Struct(ttlv.TagKeyValue, ttlv.Bytes(ttlv.TagKeyMaterial, bytes.Clone(key))),
			ttlv.Enum(ttlv.TagCryptographicAlgorithm, alg),
			ttlv.Int(ttlv.TagCryptographicLength, bits))),
	}
}

// TestKMIPRegisterAndRekeyThroughGateway registers a client's key through the gateway against a
// real region: Get returns the same bytes, Encrypt and Decrypt work with it, bad Registers are
// refused with their reasons and store nothing; Re-key makes a new key linked to the old one; the
// registry file never holds the registered key's plaintext.
func TestKMIPRegisterAndRekeyThroughGateway(t *testing.T) {
	r := regiontest.Start(t, 3)
	setupTenant(t, r, "acme", "db")
	path := filepath.Join(t.TempDir(), "kmip.db")
	g := startGateway(t, r, "acme", "db", func(c *gateway.Config) {
		c.KMIPAddr = "127.0.0.1:0"
		c.KMIPRegistryPath = path
	})
	c := dialKMIP(t, r, g, "acme", "db")
	uid := func(id string) ttlv.Item { return ttlv.Text(ttlv.TagUniqueIdentifier, id) }

	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		t.Fatal(err)
	}
	id := c.ok(ttlv.OpRegister, registerPayload("imported", ttlv.AlgorithmAES, 256, key)...).Child(ttlv.TagUniqueIdentifier).Text()
	if !bytes.Equal(c.keyOf(id), key) {
		t.Fatal("Get returned other bytes than registered")
	}
	c.ok(ttlv.OpActivate, uid(id))
	ct := c.ok(ttlv.OpEncrypt, uid(id), ttlv.Bytes(ttlv.TagData, []byte("hello")))
	pt := c.ok(ttlv.OpDecrypt, uid(id),
		ttlv.Bytes(ttlv.TagData, ct.Child(ttlv.TagData).Bytes),
		ttlv.Bytes(ttlv.TagIVCounterNonce, ct.Child(ttlv.TagIVCounterNonce).Bytes),
		ttlv.Bytes(ttlv.TagAuthenticatedEncryptionTag, ct.Child(ttlv.TagAuthenticatedEncryptionTag).Bytes))
	if string(pt.Child(ttlv.TagData).Bytes) != "hello" {
		t.Fatal("Decrypt with the registered key")
	}

	before := c.located()
	for _, bad := range []struct {
		name   string
		alg    uint32
		bits   int32
		key    []byte
		reason uint32
	}{
		{"16 bytes", ttlv.AlgorithmAES, 256, key[:16], ttlv.ReasonInvalidField},
		{"128 bits", ttlv.AlgorithmAES, 128, key[:16], ttlv.ReasonInvalidField},
		{"oversize", ttlv.AlgorithmAES, 256, bytes.Repeat(key, 100), ttlv.ReasonInvalidField},
		{"3DES", 0x02, 256, key, ttlv.ReasonInvalidField},
	} {
		if got := c.reason(ttlv.OpRegister, registerPayload("bad", bad.alg, bad.bits, bad.key)...); got != bad.reason {
			t.Errorf("Register %s: reason %#x, want %#x", bad.name, got, bad.reason)
		}
	}
	noBlock := registerPayload("bad", ttlv.AlgorithmAES, 256, key)
	noBlock[2] = ttlv.Struct(ttlv.TagSymmetricKey)
	if got := c.reason(ttlv.OpRegister, noBlock...); got != ttlv.ReasonInvalidField {
		t.Errorf("Register without a Key Block: reason %#x", got)
	}
	if after := c.located(); len(after) != len(before) {
		t.Fatalf("refused Registers stored objects: %d before, %d after", len(before), len(after))
	}

	newID := c.ok(ttlv.OpRekey, uid(id)).Child(ttlv.TagUniqueIdentifier).Text()
	if newID == id || bytes.Equal(c.keyOf(newID), key) {
		t.Fatal("Re-key did not make a new key")
	}
	if !bytes.Equal(c.keyOf(id), key) {
		t.Fatal("Re-key changed the old key")
	}
	links := map[uint32]string{}
	for _, a := range c.ok(ttlv.OpGetAttributes, uid(newID), ttlv.Text(ttlv.TagAttributeName, "Link"), ttlv.Text(ttlv.TagAttributeName, "Name")).All(ttlv.TagAttribute) {
		v := a.Child(ttlv.TagAttributeValue)
		if a.Child(ttlv.TagAttributeName).Text() == "Link" {
			links[uint32(v.Child(ttlv.TagLinkType).Int)] = v.Child(ttlv.TagLinkedObjectIdentifier).Text()
		} else if v.Child(ttlv.TagNameValue).Text() != "imported" {
			t.Errorf("replacement's name %q", v.Child(ttlv.TagNameValue).Text())
		}
	}
	if links[ttlv.LinkReplacedObject] != id {
		t.Errorf("replacement's links %v, want Replaced Object %s", links, id)
	}
	if got := c.reason(ttlv.OpRekey, uid("5a8b4bde-0000-4000-8000-000000000000")); got != ttlv.ReasonItemNotFound {
		t.Errorf("Re-key of an unknown id: reason %#x", got)
	}

	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(raw, key) || bytes.Contains(raw, key[:16]) {
		t.Fatal("the registry file holds the registered key's plaintext")
	}
}
