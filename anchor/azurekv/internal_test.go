package azurekv

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore/runtime"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"

	"github.com/kryptonkms/krypton/anchor"
)

func responseError(status int, body string) error {
	resp := &http.Response{
		StatusCode: status,
		Header:     http.Header{"Content-Type": {"application/json"}},
		Body:       io.NopCloser(strings.NewReader(body)),
	}
	return runtime.NewResponseError(resp)
}

func kvBody(code, inner string) string {
	if inner == "" {
		return fmt.Sprintf(`{"error":{"code":%q,"message":"m"}}`, code)
	}
	return fmt.Sprintf(`{"error":{"code":%q,"message":"m","innererror":{"code":%q}}}`, code, inner)
}

// TestClassify pins the table in classify's comment: Key Vault's answers
// as documented, and the errors that never come from the vault.
func TestClassify(t *testing.T) {
	const transient = anchor.DenialReason(0)
	for _, c := range []struct {
		name string
		op   string
		err  error
		want anchor.DenialReason // 0: transient
	}{
		{"unwrap bad ciphertext", "unseal", responseError(400, kvBody("BadParameter", "")), anchor.ReasonInvalidCiphertext},
		{"wrap bad parameter", "seal", responseError(400, kvBody("BadParameter", "")), anchor.ReasonKeyUnusable},
		{"check bad parameter", "check", responseError(400, kvBody("BadParameter", "")), anchor.ReasonKeyUnusable},
		{"token refused", "seal", responseError(401, kvBody("Unauthorized", "")), anchor.ReasonAccessDenied},
		{"disabled", "unseal", responseError(403, kvBody("Forbidden", "KeyDisabled")), anchor.ReasonDisabled},
		{"rbac", "check", responseError(403, kvBody("Forbidden", "ForbiddenByRbac")), anchor.ReasonAccessDenied},
		{"access policy", "seal", responseError(403, kvBody("Forbidden", "ForbiddenByPolicy")), anchor.ReasonAccessDenied},
		{"firewall", "seal", responseError(403, kvBody("Forbidden", "ForbiddenByFirewall")), anchor.ReasonAccessDenied},
		{"expired", "seal", responseError(403, kvBody("Forbidden", "KeyExpired")), anchor.ReasonKeyUnusable},
		{"not yet valid", "seal", responseError(403, kvBody("Forbidden", "KeyNotYetValid")), anchor.ReasonKeyUnusable},
		{"403 no body", "seal", responseError(403, ""), anchor.ReasonAccessDenied},
		{"not found", "seal", responseError(404, kvBody("KeyNotFound", "")), anchor.ReasonPendingDeletion},
		{"timeout", "seal", responseError(408, kvBody("RequestTimeout", "")), transient},
		{"conflict", "seal", responseError(409, kvBody("Conflict", "")), transient},
		{"throttled", "check", responseError(429, kvBody("Throttled", "")), transient},
		{"internal", "unseal", responseError(500, kvBody("InternalServerError", "")), transient},
		{"bad gateway", "unseal", responseError(502, "<html>bad gateway</html>"), transient},
		{"unavailable", "unseal", responseError(503, kvBody("ServiceUnavailable", "")), transient},
		{"gateway timeout", "unseal", responseError(504, ""), transient},
		{"canceled", "seal", fmt.Errorf("x: %w", context.Canceled), transient},
		{"deadline", "unseal", context.DeadlineExceeded, transient},
		{"network", "check", &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}, transient},
		{"credential", "seal", errors.New("DefaultAzureCredential: failed to acquire a token"), transient},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := classify(c.op, "wrapkey", c.err, anchor.ReasonPendingDeletion)
			if c.want == transient {
				if !anchor.IsTransient(err) || anchor.IsDenied(err) {
					t.Fatalf("%v: want transient", err)
				}
				return
			}
			if r, ok := anchor.Reason(err); !ok || r != c.want || anchor.IsTransient(err) {
				t.Fatalf("%v: reason %v, want %v", err, r, c.want)
			}
			if !strings.HasPrefix(errors.Unwrap(err).Error(), "azurekv: ") {
				t.Errorf("cause %q does not start with azurekv: ", errors.Unwrap(err))
			}
		})
	}
	if classify("seal", "wrapkey", nil, anchor.ReasonKeyNotFound) != nil {
		t.Error("classify(nil) != nil")
	}
	// At open, 404 is a key that never was.
	if err := classify("open", "get", responseError(404, kvBody("KeyNotFound", "")), anchor.ReasonKeyNotFound); !errors.Is(err, anchor.ErrKeyNotFound) {
		t.Errorf("open 404: %v", err)
	}
}

// Fixed bytes of the blob header: it is stored contract.
func TestBlobFormat(t *testing.T) {
	wrapped := bytes.Repeat([]byte{0xee}, payloadSize+kwOverhead)
	b := blob{alg: azkeys.EncryptionAlgorithmA256KW, version: "0123456789abcdef0123456789abcdef", wrapped: wrapped}
	got := b.marshal()
	want := append([]byte{0x01, 0x02, 32}, "0123456789abcdef0123456789abcdef"...)
	want = append(want, wrapped...)
	if !bytes.Equal(got, want) {
		t.Fatalf("marshal = %x, want %x", got, want)
	}
	back, err := parseBlob(got)
	if err != nil || back.alg != b.alg || back.version != b.version || !bytes.Equal(back.wrapped, wrapped) {
		t.Fatalf("parseBlob: %+v, %v", back, err)
	}
	rsaBlob := append([]byte{0x01, 0x01, 1, 'v'}, make([]byte, 256)...)
	if _, err := parseBlob(rsaBlob); err != nil {
		t.Fatalf("parseBlob of an RSA-2048 blob: %v", err)
	}
	for name, bad := range map[string][]byte{
		"empty":          nil,
		"format":         append([]byte{0x02}, got[1:]...),
		"alg":            append([]byte{0x01, 0x03}, got[2:]...),
		"version length": append([]byte{0x01, 0x02, 0}, got[3:]...),
		"version char":   append([]byte{0x01, 0x02, 1, '/'}, wrapped...),
		"kw size":        got[:len(got)-8],
		"rsa short":      rsaBlob[:len(rsaBlob)-8],
		"rsa long":       append([]byte{0x01, 0x01, 1, 'v'}, make([]byte, 520)...),
		"header only":    got[:3+32],
	} {
		if _, err := parseBlob(bad); !errors.Is(err, errMalformed) {
			t.Errorf("%s: %v, want errMalformed", name, err)
		}
	}
}

func TestPayload(t *testing.T) {
	ac := anchor.Context{Region: "eu-west-1", Tenant: "acme", Version: 3}
	for _, n := range []int{1, 32, anchor.MaxPlaintextSize} {
		pt := bytes.Repeat([]byte{0xa5}, n)
		p, err := newPayload(pt, ac)
		if err != nil || len(p) != payloadSize || payloadSize%8 != 0 {
			t.Fatalf("newPayload: %d bytes, %v", len(p), err)
		}
		got, err := openPayload(p, ac)
		if err != nil || !bytes.Equal(got, pt) {
			t.Fatalf("openPayload: %v", err)
		}
		other := ac
		other.Version++
		if _, err := openPayload(p, other); !errors.Is(err, errContext) {
			t.Errorf("other Context: %v, want errContext", err)
		}
		for name, mutate := range map[string]func(q []byte){
			"length 0":      func(q []byte) { q[nonceSize+digestSize] = 0 },
			"length 65":     func(q []byte) { q[nonceSize+digestSize] = 65 },
			"padding":       func(q []byte) { q[payloadSize-1] = 1 },
			"short payload": nil,
		} {
			q := bytes.Clone(p)
			if mutate == nil {
				q = q[:len(q)-8]
			} else {
				mutate(q)
			}
			if _, err := openPayload(q, ac); !errors.Is(err, errMalformed) {
				t.Errorf("%s: %v, want errMalformed", name, err)
			}
		}
	}
	a, _ := newPayload([]byte{1}, ac)
	b, _ := newPayload([]byte{1}, ac)
	if bytes.Equal(a, b) {
		t.Error("two payloads of the same input are equal: no nonce")
	}
}
