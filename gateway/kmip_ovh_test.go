package gateway_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/ovh/kmip-go"
	"github.com/ovh/kmip-go/kmipclient"
	"github.com/ovh/kmip-go/payloads"

	"github.com/kryptonkms/krypton/gateway"
	"github.com/kryptonkms/krypton/gateway/kmip/ttlv"
	"github.com/kryptonkms/krypton/region/regiontest"
)

// checkRequest and checkResponse are KMIP's Check payloads, which
// github.com/ovh/kmip-go v0.3.3 does not define; it registers them through
// its own extension point (kmip.RegisterOperationPayload).
type checkRequest struct {
	UniqueIdentifier       string                      `ttlv:",omitempty"`
	CryptographicUsageMask kmip.CryptographicUsageMask `ttlv:",omitempty"`
}

func (*checkRequest) Operation() kmip.Operation { return kmip.OperationCheck }

type checkResponse struct {
	UniqueIdentifier       string
	CryptographicUsageMask kmip.CryptographicUsageMask `ttlv:",omitempty"`
}

func (*checkResponse) Operation() kmip.Operation { return kmip.OperationCheck }

func init() { kmip.RegisterOperationPayload[checkRequest, checkResponse](kmip.OperationCheck) }

// TestKMIPWithOVHClient drives a real gateway, on a real three-node region,
// with a real third-party KMIP client: github.com/ovh/kmip-go, the client
// library of KMIP auto-unseal in secrets managers. In each KMIP version it
// negotiates (1.2, 1.3, 1.4 and 2.0) it creates and activates a key, encrypts
// under AES-GCM with its own 96-bit nonce and IV Length 12 — the request that
// failed with "GCM nonces are 96 bits" — decrypts, checks the key's usage,
// revokes it, and gets the Result Reasons it expects; in 1.x (the only form of
// attributes it parses) it also reads attributes and the attribute list, and
// adds, modifies and deletes attributes.
func TestKMIPWithOVHClient(t *testing.T) {
	r := regiontest.Start(t, 3)
	setupTenant(t, r, "acme", "vault")
	g := startGateway(t, r, "acme", "vault", func(c *gateway.Config) { c.KMIPAddr = "127.0.0.1:0" })
	cert, err := r.CA.IssueService("acme", "vault", time.Hour)
	if err != nil {
		t.Fatal(err)
	}

	for _, v := range []kmip.ProtocolVersion{kmip.V1_2, kmip.V1_3, kmip.V1_4, kmip.V2_0} {
		t.Run(fmt.Sprintf("v%d.%d", v.ProtocolVersionMajor, v.ProtocolVersionMinor), func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			c, err := kmipclient.DialContext(ctx, g.KMIPAddr().String(),
				kmipclient.WithRootCAPem(r.CA.CertPEM()),
				kmipclient.WithClientCert(cert.TLSCertificate()),
				kmipclient.WithServerName("127.0.0.1"),
				kmipclient.WithKmipVersions(v))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if c.Version() != v {
				t.Fatalf("negotiated %v, want %v", c.Version(), v)
			}
			reason := func(p kmip.OperationPayload) kmip.ResultReason {
				t.Helper()
				items, err := c.Batch(ctx, p)
				if err != nil {
					t.Fatal(err)
				}
				if items[0].ResultStatus == kmip.ResultStatusSuccess {
					return 0
				}
				return items[0].ResultReason
			}

			name := "unseal-" + v.String()
			created, err := c.Create().AES(256, kmip.CryptographicUsageEncrypt|kmip.CryptographicUsageDecrypt).
				WithName(name).ExecContext(ctx)
			if err != nil {
				t.Fatalf("Create: %v", err)
			}
			id := created.UniqueIdentifier
			if _, err := c.Activate(id).ExecContext(ctx); err != nil {
				t.Fatalf("Activate: %v", err)
			}

			// Encrypt with the client's nonce, as an auto-unseal client
			// does: IV Length 12 (bytes), Tag Length 16.
			gcm := kmip.CryptographicParameters{
				BlockCipherMode: kmip.BlockCipherModeGCM, CryptographicAlgorithm: kmip.CryptographicAlgorithmAES, IVLength: 12, TagLength: 16,
			}
			nonce := make([]byte, 12)
			if _, err := rand.Read(nonce); err != nil {
				t.Fatal(err)
			}
			var aad []byte
			if v == kmip.V1_4 || v == kmip.V2_0 {
				aad = []byte("seal wrap")
			}
			plain := []byte("the root key of a secrets manager")
			enc, err := c.Encrypt(id).WithCryptographicParameters(gcm).WithIvCounterNonce(nonce).WithAAD(aad).
				Data(plain).ExecContext(ctx)
			if err != nil {
				t.Fatalf("Encrypt with a client nonce: %v", err)
			}
			if bytes.Contains(enc.Data, plain) {
				t.Fatal("ciphertext contains the plaintext")
			}
			dec, err := c.Decrypt(id).WithCryptographicParameters(gcm).WithIvCounterNonce(nonce).WithAAD(aad).
				WithAuthTag(enc.AuthenticatedEncryptionTag).Data(enc.Data).ExecContext(ctx)
			if err != nil {
				t.Fatalf("Decrypt: %v", err)
			}
			if !bytes.Equal(dec.Data, plain) {
				t.Fatal("Decrypt returned other bytes")
			}
			// The same nonce again gives another ciphertext (a fresh key
			// per message), which decrypts too.
			enc2, err := c.Encrypt(id).WithCryptographicParameters(gcm).WithIvCounterNonce(nonce).WithAAD(aad).
				Data(plain).ExecContext(ctx)
			if err != nil {
				t.Fatalf("Encrypt again: %v", err)
			}
			if bytes.Equal(enc2.Data, enc.Data) {
				t.Fatal("the same client nonce gave the same ciphertext")
			}
			// A tampered ciphertext is a Cryptographic Failure.
			bad := bytes.Clone(enc.Data)
			bad[len(bad)-1] ^= 1
			if got := reason(&payloads.DecryptRequestPayload{UniqueIdentifier: id, CryptographicParameters: &gcm,
				Data: bad, IVCounterNonce: nonce, AuthenticatedEncryptionAdditionalData: aad,
				AuthenticatedEncryptionTag: enc.AuthenticatedEncryptionTag}); got != kmip.ResultReasonCryptographicFailure {
				t.Fatalf("tampered ciphertext: reason %v", got)
			}

			// Attributes. kmip-go v0.3.3 writes and reads them in the KMIP 1.x form only
			// (Attribute, Attribute Name and Index): in 2.0 the gateway answers with 2.0's
			// Attributes structure, which it does not parse, so these steps are 1.x only (the
			// package tests and PyKMIP cover them in 2.0).
			if v.ProtocolVersionMajor < 2 {
				// Attributes.
				attrs, err := c.GetAttributes(id).ExecContext(ctx)
				if err != nil {
					t.Fatalf("GetAttributes: %v", err)
				}
				got := map[kmip.AttributeName][]any{}
				for _, a := range attrs.Attribute {
					got[a.AttributeName] = append(got[a.AttributeName], a.AttributeValue)
				}
				if s, _ := got[kmip.AttributeNameState]; len(s) != 1 || s[0] != kmip.StateActive {
					t.Fatalf("State %v", s)
				}
				if n := got[kmip.AttributeNameName]; len(n) != 1 || n[0].(kmip.Name).NameValue != name {
					t.Fatalf("Name %v", n)
				}
				if l := got[kmip.AttributeNameCryptographicLength]; len(l) != 1 || l[0] != int32(256) {
					t.Fatalf("Cryptographic Length %v", l)
				}
				list, err := c.GetAttributeList(id).ExecContext(ctx)
				if err != nil {
					t.Fatalf("GetAttributeList: %v", err)
				}
				for _, want := range []kmip.AttributeName{kmip.AttributeNameUniqueIdentifier, kmip.AttributeNameState,
					kmip.AttributeNameName, kmip.AttributeNameCryptographicAlgorithm, kmip.AttributeNameActivationDate} {
					if !slices.Contains(list.AttributeName, want) {
						t.Errorf("GetAttributeList lacks %q: %v", want, list.AttributeName)
					}
				}

				names := func() []string {
					t.Helper()
					a, err := c.GetAttributes(id, kmip.AttributeNameName).ExecContext(ctx)
					if err != nil {
						t.Fatal(err)
					}
					var out []string
					for _, n := range a.Attribute {
						out = append(out, n.AttributeValue.(kmip.Name).NameValue)
					}
					return out
				}
				add, err := c.AddAttribute(id, kmip.AttributeNameName, kmip.Name{NameValue: "alias", NameType: kmip.NameTypeUninterpretedTextString}).ExecContext(ctx)
				if err != nil {
					t.Fatalf("AddAttribute: %v", err)
				}
				if add.Attribute.AttributeIndex == nil || *add.Attribute.AttributeIndex != 1 {
					t.Fatalf("AddAttribute index %v", add.Attribute.AttributeIndex)
				}
				if _, err := c.AddAttribute(id, kmip.AttributeNameObjectGroup, "unseal").ExecContext(ctx); err != nil {
					t.Fatalf("AddAttribute Object Group: %v", err)
				}
				if _, err := c.ModifyAttribute(id, kmip.AttributeNameName, kmip.Name{NameValue: "alias-2", NameType: kmip.NameTypeUninterpretedTextString}).
					WithIndex(1).ExecContext(ctx); err != nil {
					t.Fatalf("ModifyAttribute: %v", err)
				}
				if n := names(); !slices.Equal(n, []string{name, "alias-2"}) {
					t.Fatalf("names %q", n)
				}
				del, err := c.DeleteAttribute(id, kmip.AttributeNameName).WithIndex(1).ExecContext(ctx)
				if err != nil {
					t.Fatalf("DeleteAttribute: %v", err)
				}
				if del.Attribute.AttributeValue.(kmip.Name).NameValue != "alias-2" {
					t.Fatalf("DeleteAttribute returned %v", del.Attribute.AttributeValue)
				}
				if _, err := c.DeleteAttribute(id, kmip.AttributeNameObjectGroup).ExecContext(ctx); err != nil {
					t.Fatalf("DeleteAttribute Object Group: %v", err)
				}
				if n := names(); !slices.Equal(n, []string{name}) {
					t.Fatalf("names %q", n)
				}
				one := int32(1)
				for what, tc := range map[string]struct {
					p    kmip.OperationPayload
					want kmip.ResultReason
				}{
					"add a read-only attribute": {&payloads.AddAttributeRequestPayload{UniqueIdentifier: id,
						Attribute: kmip.Attribute{AttributeName: kmip.AttributeNameCryptographicLength, AttributeValue: int32(128)}}, kmip.ResultReasonPermissionDenied},
					"add an unknown attribute": {&payloads.AddAttributeRequestPayload{UniqueIdentifier: id,
						Attribute: kmip.Attribute{AttributeName: "x-custom", AttributeValue: "v"}}, kmip.ResultReasonInvalidField},
					"add a Name the key has": {&payloads.AddAttributeRequestPayload{UniqueIdentifier: id,
						Attribute: kmip.Attribute{AttributeName: kmip.AttributeNameName, AttributeValue: kmip.Name{NameValue: name, NameType: kmip.NameTypeUninterpretedTextString}}}, kmip.ResultReasonIllegalOperation},
					"modify a missing instance": {&payloads.ModifyAttributeRequestPayload{UniqueIdentifier: id,
						Attribute: kmip.Attribute{AttributeName: kmip.AttributeNameName, AttributeIndex: &one, AttributeValue: kmip.Name{NameValue: "x", NameType: kmip.NameTypeUninterpretedTextString}}}, kmip.ResultReasonItemNotFound},
					"delete a missing attribute": {&payloads.DeleteAttributeRequestPayload{UniqueIdentifier: id,
						AttributeName: kmip.AttributeNameObjectGroup}, kmip.ResultReasonItemNotFound},
					"delete a required attribute": {&payloads.DeleteAttributeRequestPayload{UniqueIdentifier: id,
						AttributeName: kmip.AttributeNameState}, kmip.ResultReasonPermissionDenied},
					"attributes of no object":     {&payloads.GetAttributesRequestPayload{UniqueIdentifier: "no-such-object"}, kmip.ResultReasonItemNotFound},
					"check a usage the key lacks": {&checkRequest{UniqueIdentifier: id, CryptographicUsageMask: kmip.CryptographicUsageSign}, kmip.ResultReasonPermissionDenied},
					"check no object":             {&checkRequest{UniqueIdentifier: "no-such-object"}, kmip.ResultReasonItemNotFound},
				} {
					if got := reason(tc.p); got != tc.want {
						t.Errorf("%s: reason %v, want %v", what, got, tc.want)
					}
				}

			}

			// Check: the key may encrypt and decrypt.
			resp, err := c.Request(ctx, &checkRequest{UniqueIdentifier: id,
				CryptographicUsageMask: kmip.CryptographicUsageEncrypt | kmip.CryptographicUsageDecrypt})
			if err != nil {
				t.Fatalf("Check: %v", err)
			}
			if resp.(*checkResponse).UniqueIdentifier != id {
				t.Fatal("Check answered for another object")
			}

			// KMIP 2.0's own reasons for refused Checks (docs/kmip.md), which kmip-go v0.3.3 has
			// no names for.
			lacksUsage, wrongState := kmip.ResultReasonPermissionDenied, kmip.ResultReasonPermissionDenied
			if v.ProtocolVersionMajor >= 2 {
				lacksUsage = kmip.ResultReason(ttlv.ReasonIncompatibleCryptographicUsageMask)
				wrongState = kmip.ResultReason(ttlv.ReasonWrongKeyLifecycleState)
			}
			if got := reason(&checkRequest{UniqueIdentifier: id, CryptographicUsageMask: kmip.CryptographicUsageSign}); got != lacksUsage {
				t.Errorf("Check of a usage the key lacks: reason %v, want %v", got, lacksUsage)
			}

			// Revoked, it neither checks nor decrypts.
			if _, err := c.Revoke(id).WithRevocationReasonCode(kmip.RevocationReasonCodeCessationOfOperation).ExecContext(ctx); err != nil {
				t.Fatalf("Revoke: %v", err)
			}
			if got := reason(&checkRequest{UniqueIdentifier: id}); got != wrongState {
				t.Errorf("Check of a revoked key: reason %v, want %v", got, wrongState)
			}
			if got := reason(&payloads.DecryptRequestPayload{UniqueIdentifier: id, CryptographicParameters: &gcm,
				Data: enc.Data, IVCounterNonce: nonce, AuthenticatedEncryptionAdditionalData: aad,
				AuthenticatedEncryptionTag: enc.AuthenticatedEncryptionTag}); got != wrongState {
				t.Errorf("Decrypt with a revoked key: reason %v, want %v", got, wrongState)
			}
		})
	}
}
