package kmip

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"encoding/hex"
	"log/slog"
	"strings"
	"sync"
	"testing"

	"github.com/kryptonkms/krypton/gateway/kmip/ttlv"
	"github.com/kryptonkms/krypton/internal/pki"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestLogsHoldNoSecrets runs every operation with debug logging and checks
// that neither the key, nor plaintext, nor a wrapped blob appears in the
// logs, in hex or base64.
func TestLogsHoldNoSecrets(t *testing.T) {
	var logs lockedBuffer
	e := newEnv(t, func(c *Config) {
		c.Logger = slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	c := e.dial("acme", "db")
	id := c.create(v14, "secret-test")
	c.ok(v14, ttlv.OpActivate, uidItem(id))
	key := c.ok(v14, ttlv.OpGet, uidItem(id)).Child(ttlv.TagSymmetricKey).Child(ttlv.TagKeyBlock).Child(ttlv.TagKeyValue).Child(ttlv.TagKeyMaterial).Bytes
	plaintext := []byte("the plaintext nobody may log")
	enc := c.ok(v14, ttlv.OpEncrypt, uidItem(id), cbcParams(), ttlv.Bytes(ttlv.TagData, plaintext))
	c.ok(v14, ttlv.OpDecrypt, uidItem(id), cbcParams(), *enc.Child(ttlv.TagData), *enc.Child(ttlv.TagIVCounterNonce))
	c.failure(v14, ttlv.ReasonCryptographicFailure, ttlv.OpDecrypt, uidItem(id), cbcParams(),
		ttlv.Bytes(ttlv.TagData, make([]byte, 16)), *enc.Child(ttlv.TagIVCounterNonce))
	registered := randomKey(t, 32)
	rid := c.register(v14, "registered-secret", registered)
	c.ok(v14, ttlv.OpRekey, uidItem(rid))
	c.failure(v14, ttlv.ReasonInvalidField, ttlv.OpRegister, ttlv.Enum(ttlv.TagObjectType, ttlv.ObjectSymmetricKey),
		symmetricKey(ttlv.KeyFormatRaw, bytes.Clone(registered[:24]), ttlv.AlgorithmAES, 256))
	o, err := e.srv.reg.get("acme/db", id)
	if err != nil {
		t.Fatal(err)
	}
	e.stop()
	out := logs.String()
	if !strings.Contains(out, id) {
		t.Fatal("logs do not mention the object at all; the test checks nothing")
	}
	for what, secret := range map[string][]byte{"key": key, "plaintext": plaintext, "wrapped key": o.Wrapped,
		"registered key": registered, "refused registered key": registered[:24]} {
		for _, form := range []string{string(secret), hex.EncodeToString(secret), strings.ToUpper(hex.EncodeToString(secret)),
			base64.StdEncoding.EncodeToString(secret), base64.RawURLEncoding.EncodeToString(secret)} {
			if strings.Contains(out, form) {
				t.Fatalf("the logs hold the %s", what)
			}
		}
	}
}

// TestTLSVersions: TLS 1.3 only by default; AllowTLS12 admits TLS 1.2 with
// forward-secret AEAD suites; a certificate that names no service is
// refused at the handshake.
func TestTLSVersions(t *testing.T) {
	dial := func(e *env, max uint16, cert *pki.Certificate) error {
		cfg := pki.ClientTLSConfig(e.ca.Pool(), cert.TLSCertificate(), "127.0.0.1")
		cfg.MinVersion, cfg.MaxVersion = tls.VersionTLS12, max
		conn, err := tls.Dial("tcp", e.addr, cfg)
		if err != nil {
			return err
		}
		defer conn.Close()
		// With TLS 1.3 the server's verdict on the client certificate
		// arrives after the client's handshake: do a round trip.
		if _, err := conn.Write(ttlv.Marshal(requestMessage(v14, batchItem(ttlv.OpDiscoverVersions)))); err != nil {
			return err
		}
		_, err = ttlv.ReadMessage(conn, 1<<16)
		return err
	}
	strict := newEnv(t, nil)
	svc, err := strict.ca.IssueService("acme", "db", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := dial(strict, tls.VersionTLS13, svc); err != nil {
		t.Fatalf("TLS 1.3: %v", err)
	}
	if err := dial(strict, tls.VersionTLS12, svc); err == nil {
		t.Fatal("TLS 1.2 accepted by default")
	}
	op, err := strict.ca.IssueOperator("alice", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := dial(strict, tls.VersionTLS13, op); err == nil {
		t.Fatal("an operator certificate was accepted")
	}

	lax := newEnv(t, func(c *Config) { c.AllowTLS12 = true })
	svc2, err := lax.ca.IssueService("acme", "db", 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := dial(lax, tls.VersionTLS12, svc2); err != nil {
		t.Fatalf("TLS 1.2 with AllowTLS12: %v", err)
	}
}
