package xks

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
)

// Limits on what a request may carry. The specification asks for at least 4300 bytes of
// plaintext or ciphertext and 8192 bytes of AAD; larger values than these are answered with
// UnsupportedOperationException, as it says.
const (
	MaxBodySize      = 128 << 10
	MaxPlaintextSize = 32 << 10
	MaxAADSize       = 16 << 10
	maxMetadataField = 4096 // ARNs are at most 2048 characters
)

// Operation is an XKS API operation, named by its URI's last element.
type Operation string

// The four operations of the specification.
const (
	OpGetKeyMetadata  Operation = "metadata"
	OpEncrypt         Operation = "encrypt"
	OpDecrypt         Operation = "decrypt"
	OpGetHealthStatus Operation = "health"
)

// RequestMetadata is the requestMetadata object: what KMS says about the call, logged (never
// plaintext) so that an operator can match it with CloudTrail.
type RequestMetadata struct {
	AWSPrincipalARN string `json:"awsPrincipalArn"`
	AWSSourceVPC    string `json:"awsSourceVpc,omitempty"`
	AWSSourceVPCE   string `json:"awsSourceVpce,omitempty"`
	KMSKeyARN       string `json:"kmsKeyArn,omitempty"`
	KMSOperation    string `json:"kmsOperation"`
	KMSRequestID    string `json:"kmsRequestId"`
	KMSViaService   string `json:"kmsViaService,omitempty"`
}

// Request is a parsed request body; the []byte fields are base64-decoded.
type Request struct {
	Metadata             RequestMetadata
	Plaintext            []byte
	Ciphertext           []byte
	CiphertextMetadata   []byte
	AAD                  []byte
	IV                   []byte
	Tag                  []byte
	EncryptionAlgorithm  string
	CDIVAlgorithm        string
	HasAAD, HasMetadata  bool
	HasCDIV, HasCDIVAlgo bool
}

// wireRequest is the JSON body. Unknown fields are allowed: the specification says KMS may add
// requestMetadata fields (Appendix B) and the proxy must not refuse a request for them.
type wireRequest struct {
	RequestMetadata *RequestMetadata `json:"requestMetadata"`
	Plaintext       *string          `json:"plaintext"`
	Ciphertext      *string          `json:"ciphertext"`
	CiphertextMD    *string          `json:"ciphertextMetadata"`
	AAD             *string          `json:"additionalAuthenticatedData"`
	IV              *string          `json:"initializationVector"`
	Tag             *string          `json:"authenticationTag"`
	Algorithm       *string          `json:"encryptionAlgorithm"`
	CDIVAlgorithm   *string          `json:"ciphertextDataIntegrityValueAlgorithm"`
}

// ParseRequest parses and checks the body of a request for op. Its errors are *Error values
// naming the field at fault, never echoing request bytes.
func ParseRequest(op Operation, body []byte) (*Request, error) {
	if len(body) > MaxBodySize {
		return nil, xerr(UnsupportedOperationException, "the request body is larger than this proxy accepts (128 KiB)")
	}
	var w wireRequest
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&w); err != nil {
		return nil, xerr(ValidationException, "the request body is not a JSON object of the XKS API")
	}
	if _, err := dec.Token(); !errors.Is(err, io.EOF) {
		return nil, xerr(ValidationException, "the request body has data after its JSON object")
	}
	if w.RequestMetadata == nil {
		return nil, xerr(ValidationException, "requestMetadata is required")
	}
	m := *w.RequestMetadata
	r := &Request{Metadata: m}
	for _, f := range []string{m.AWSPrincipalARN, m.AWSSourceVPC, m.AWSSourceVPCE, m.KMSKeyARN, m.KMSOperation, m.KMSRequestID, m.KMSViaService} {
		if len(f) > maxMetadataField {
			return nil, xerr(ValidationException, "a requestMetadata field is longer than 4096 characters")
		}
	}
	if m.KMSRequestID == "" || m.KMSOperation == "" {
		return nil, xerr(ValidationException, "requestMetadata.kmsRequestId and requestMetadata.kmsOperation are required")
	}
	if op == OpGetHealthStatus {
		return r, nil
	}
	if m.AWSPrincipalARN == "" {
		return nil, xerr(ValidationException, "requestMetadata.awsPrincipalArn is required")
	}
	if op == OpGetKeyMetadata {
		return r, nil
	}
	if m.KMSKeyARN == "" {
		return nil, xerr(ValidationException, "requestMetadata.kmsKeyArn is required")
	}
	if w.Algorithm == nil {
		return nil, xerr(ValidationException, "encryptionAlgorithm is required")
	}
	if r.EncryptionAlgorithm = *w.Algorithm; r.EncryptionAlgorithm != "AES_GCM" {
		return nil, xerr(UnsupportedOperationException, "encryptionAlgorithm must be AES_GCM, the only algorithm of XKS API v1")
	}
	var err error
	if w.AAD != nil {
		r.HasAAD = true
		if r.AAD, err = decode(*w.AAD, MaxAADSize, "additionalAuthenticatedData"); err != nil {
			return nil, err
		}
	}
	switch op {
	case OpEncrypt:
		if w.Plaintext == nil {
			return nil, xerr(ValidationException, "plaintext is required")
		}
		if r.Plaintext, err = decode(*w.Plaintext, MaxPlaintextSize, "plaintext"); err != nil {
			return nil, err
		}
		if w.CDIVAlgorithm != nil {
			r.HasCDIVAlgo, r.CDIVAlgorithm = true, *w.CDIVAlgorithm
			if r.CDIVAlgorithm != "SHA_256" {
				return nil, xerr(UnsupportedOperationException, "ciphertextDataIntegrityValueAlgorithm must be SHA_256, the only one of XKS API v1")
			}
		}
	case OpDecrypt:
		if w.Ciphertext == nil || w.IV == nil || w.Tag == nil {
			return nil, xerr(InvalidCiphertextException, "ciphertext, initializationVector and authenticationTag are required")
		}
		if r.Ciphertext, err = decode(*w.Ciphertext, MaxPlaintextSize, "ciphertext"); err != nil {
			return nil, err
		}
		if r.IV, err = decode(*w.IV, 64, "initializationVector"); err != nil {
			return nil, err
		}
		if r.Tag, err = decode(*w.Tag, 64, "authenticationTag"); err != nil {
			return nil, err
		}
		if len(r.IV) != 12 && len(r.IV) != 16 {
			return nil, xerr(InvalidCiphertextException, "initializationVector must be 12 or 16 bytes")
		}
		if len(r.Tag) != 16 {
			return nil, xerr(InvalidCiphertextException, "authenticationTag must be 16 bytes")
		}
		if w.CiphertextMD != nil {
			r.HasMetadata = true
			if r.CiphertextMetadata, err = decode(*w.CiphertextMD, 64, "ciphertextMetadata"); err != nil {
				return nil, err
			}
			if len(r.CiphertextMetadata) > 20 {
				return nil, xerr(InvalidCiphertextException, "ciphertextMetadata must be at most 20 bytes")
			}
		}
	}
	return r, nil
}

// decode decodes a standard base64 field of at most limit bytes.
func decode(s string, limit int, field string) ([]byte, error) {
	if base64.StdEncoding.DecodedLen(len(s)) > limit+3 {
		return nil, xerr(UnsupportedOperationException, field+" is larger than this proxy accepts")
	}
	b, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, xerr(ValidationException, field+" is not valid base64")
	}
	if len(b) > limit {
		return nil, xerr(UnsupportedOperationException, field+" is larger than this proxy accepts")
	}
	return b, nil
}
