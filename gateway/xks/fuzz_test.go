package xks

import (
	"errors"
	"testing"
)

// FuzzParseRequest feeds arbitrary bodies to the request parser of every operation: it never
// panics, every refusal is an *Error of the specification's names with a short printable
// message, and an accepted request respects the size limits. Seeds: the specification's request
// shapes; the committed corpus is in testdata/fuzz/FuzzParseRequest.
func FuzzParseRequest(f *testing.F) {
	md := `"requestMetadata":{"awsPrincipalArn":"arn:aws:iam::123456789012:user/Alice","kmsKeyArn":"arn:aws:kms:us-east-2:123456789012:key/1","kmsOperation":"Encrypt","kmsRequestId":"4112f4d6","kmsViaService":"ebs"}`
	for _, s := range []string{
		`{` + md + `}`,
		`{"requestMetadata":{"kmsRequestId":"1","kmsOperation":"KmsHealthCheck"}}`,
		`{` + md + `,"additionalAuthenticatedData":"cHJvamVjdD1uaWxl","plaintext":"SGVsbG8gV29ybGQh","encryptionAlgorithm":"AES_GCM","ciphertextDataIntegrityValueAlgorithm":"SHA_256"}`,
		`{` + md + `,"ciphertext":"ghxkK1txeDNn3q8Y","ciphertextMetadata":"AQ==","encryptionAlgorithm":"AES_GCM","initializationVector":"HMrlRw85cAJUd5Ax","authenticationTag":"vBxN2ncH1oEkR8WVXpmyYQ=="}`,
		`{` + md + `,"plaintext":"!!","encryptionAlgorithm":"RSA"}`,
		`{"requestMetadata":{`, `[]`, `null`, `{} {}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, body string) {
		for _, op := range []Operation{OpGetKeyMetadata, OpEncrypt, OpDecrypt, OpGetHealthStatus} {
			r, err := ParseRequest(op, []byte(body))
			if err != nil {
				var xe *Error
				if !errors.As(err, &xe) {
					t.Fatalf("%s: error %v is not an *Error", op, err)
				}
				if _, ok := httpStatus[xe.Name]; !ok || len(xe.Message) >= 512 {
					t.Fatalf("%s: error %q", op, xe.Name)
				}
				for _, c := range xe.Message {
					if c < 0x20 || c > 0x7e {
						t.Fatalf("%s: unprintable error message %q", op, xe.Message)
					}
				}
				continue
			}
			if len(r.Plaintext) > MaxPlaintextSize || len(r.Ciphertext) > MaxPlaintextSize || len(r.AAD) > MaxAADSize ||
				len(r.CiphertextMetadata) > 20 || r.Metadata.KMSRequestID == "" {
				t.Fatalf("%s: accepted a request beyond the limits", op)
			}
			if op == OpDecrypt && (len(r.IV) != 12 && len(r.IV) != 16 || len(r.Tag) != 16) {
				t.Fatalf("decrypt accepted IV %d tag %d", len(r.IV), len(r.Tag))
			}
		}
	})
}
