package azurekv

import (
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"

	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"

	"github.com/kryptonkms/krypton/anchor"
)

// A sealed blob is
//
//	format  1 byte  formatV1
//	alg     1 byte  algRSAOAEP256 or algA256KW
//	vlen    1 byte  length of the key version, 1 to maxVersionLen
//	version vlen bytes, the Key Vault key version wrapkey used
//	wrapped the rest: what wrapkey returned for the payload
//
// The version is pinned so that Unseal asks for the version that sealed
// the blob, whatever the key's current version is after a rotation. The
// header is not authenticated: a changed algorithm or version makes
// unwrapkey fail or unwrap other bytes, which the payload's digest
// catches.
//
// The payload, which Key Vault wraps, is fixed-size so that the blob does
// not reveal the plaintext length, and a multiple of 8 bytes as A256KW
// (RFC 3394) requires:
//
//	nonce   16 bytes, random
//	digest  32 bytes, SHA-256(Context.AAD())
//	n        1 byte, plaintext length, 1 to anchor.MaxPlaintextSize
//	pt      64 bytes, plaintext and zero padding
//	pad      7 bytes, zero
//
// wrapkey takes no additional data, so the digest binds the Context: a
// blob unwrapped under another Context has another digest and is refused.
// The nonce makes two seals of the same input differ under A256KW, which
// is deterministic (RSA-OAEP is randomised anyway). 120 bytes fit
// RSA-OAEP-256 under a 2048-bit key (at most 190).
const (
	formatV1 = 0x01

	algRSAOAEP256 = 0x01
	algA256KW     = 0x02

	maxVersionLen = 64
	nonceSize     = 16
	digestSize    = sha256.Size
	payloadSize   = nonceSize + digestSize + 1 + anchor.MaxPlaintextSize + 7

	// kwOverhead is what A256KW adds to its input: the 8-byte
	// integrity check value.
	kwOverhead = 8
	// maxWrappedSize bounds the wrapped bytes: an RSA-4096 wrap is 512.
	maxWrappedSize = 512
)

// errMalformed is the cause of an invalid-ciphertext denial for a blob that
// does not parse or whose payload does not check. It never shows the blob.
var errMalformed = errors.New("azurekv: sealed blob is malformed")

// errContext is the cause of an invalid-ciphertext denial for a blob that
// unwraps but was sealed under another Context (or is not Krypton's).
var errContext = errors.New("azurekv: sealed blob does not match its Context")

func algByte(a azkeys.EncryptionAlgorithm) byte {
	switch a {
	case azkeys.EncryptionAlgorithmRSAOAEP256:
		return algRSAOAEP256
	case azkeys.EncryptionAlgorithmA256KW:
		return algA256KW
	}
	return 0
}

func algName(b byte) (azkeys.EncryptionAlgorithm, bool) {
	switch b {
	case algRSAOAEP256:
		return azkeys.EncryptionAlgorithmRSAOAEP256, true
	case algA256KW:
		return azkeys.EncryptionAlgorithmA256KW, true
	}
	return "", false
}

// validVersion reports whether v looks like a Key Vault key version: 1 to
// maxVersionLen letters and digits (Key Vault uses 32 hex digits).
func validVersion(v string) bool {
	if len(v) == 0 || len(v) > maxVersionLen {
		return false
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
			return false
		}
	}
	return true
}

// newPayload returns the payload for plaintext under ac. The caller clears it.
func newPayload(plaintext []byte, ac anchor.Context) ([]byte, error) {
	p := make([]byte, payloadSize)
	if _, err := io.ReadFull(rand.Reader, p[:nonceSize]); err != nil {
		return nil, fmt.Errorf("azurekv: %w", err)
	}
	d := sha256.Sum256(ac.AAD())
	copy(p[nonceSize:], d[:])
	p[nonceSize+digestSize] = byte(len(plaintext))
	copy(p[nonceSize+digestSize+1:], plaintext)
	return p, nil
}

// openPayload checks p against ac and returns a copy of its plaintext.
func openPayload(p []byte, ac anchor.Context) ([]byte, error) {
	if len(p) != payloadSize {
		return nil, errMalformed
	}
	d := sha256.Sum256(ac.AAD())
	if subtle.ConstantTimeCompare(p[nonceSize:nonceSize+digestSize], d[:]) != 1 {
		return nil, errContext
	}
	n := int(p[nonceSize+digestSize])
	body := p[nonceSize+digestSize+1:]
	if n < 1 || n > anchor.MaxPlaintextSize {
		return nil, errMalformed
	}
	var zero [anchor.MaxPlaintextSize + 7]byte
	if subtle.ConstantTimeCompare(body[n:], zero[:len(body)-n]) != 1 {
		return nil, errMalformed
	}
	return append([]byte(nil), body[:n]...), nil
}

// blob is a parsed sealed blob.
type blob struct {
	alg     azkeys.EncryptionAlgorithm
	version string
	wrapped []byte
}

func (b blob) marshal() []byte {
	out := make([]byte, 0, 3+len(b.version)+len(b.wrapped))
	out = append(out, formatV1, algByte(b.alg), byte(len(b.version)))
	out = append(out, b.version...)
	return append(out, b.wrapped...)
}

// parseBlob parses a sealed blob without contacting Key Vault, refusing
// what cannot be Krypton's: another format, an unknown algorithm, a bad
// version, wrapped bytes of a size the algorithm never produces.
func parseBlob(s []byte) (blob, error) {
	if len(s) < 3 || s[0] != formatV1 {
		return blob{}, errMalformed
	}
	alg, ok := algName(s[1])
	if !ok {
		return blob{}, errMalformed
	}
	vlen := int(s[2])
	if len(s) < 3+vlen {
		return blob{}, errMalformed
	}
	b := blob{alg: alg, version: string(s[3 : 3+vlen]), wrapped: s[3+vlen:]}
	if !validVersion(b.version) {
		return blob{}, errMalformed
	}
	switch alg {
	case azkeys.EncryptionAlgorithmA256KW:
		if len(b.wrapped) != payloadSize+kwOverhead {
			return blob{}, errMalformed
		}
	default:
		// RSA-OAEP output is the modulus size; 2048 bits at least.
		if len(b.wrapped) < 256 || len(b.wrapped) > maxWrappedSize || len(b.wrapped)%8 != 0 {
			return blob{}, errMalformed
		}
	}
	return b, nil
}
