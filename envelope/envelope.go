// Package envelope is the ciphertext format of Encrypt, which package gateway and package client
// both make and read (so it sits beside wrap, not under either): one self-contained ciphertext
// holding a data key (L4) wrapped by a region and a payload sealed under that data key with
// AES-256-GCM.
// Seal and Open are pure functions of their inputs and the data key; wrapping and unwrapping the
// data key is the region's (package gateway or client does it). docs/gateway.md specifies the
// format, with a test vector.
//
//	ct, err := envelope.Seal(dataKey, wrappedBlob, data, context)
//	c, err := envelope.Parse(ct)   // c.Blob goes to the region's Unwrap with context
//	data, err := envelope.Open(dataKey, c, context)
package envelope

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"errors"

	"github.com/kryptonkms/krypton/internal/fipsmode"
)

// Format constants (docs/gateway.md, "Ciphertext format").
const (
	// Version is the only format version this package makes and reads.
	Version = 1
	// KeySize is the size of a data key: AES-256.
	KeySize = 32
	// NonceSize is the AES-GCM nonce size.
	NonceSize = 12
	// TagSize is the AES-GCM tag size.
	TagSize = 16
	// MaxBlobSize bounds the wrapped data key, as the region does (transport.MaxBlobSize).
	MaxBlobSize = 1024
	// MaxDataSize bounds the data one ciphertext holds: 4 MiB, so that a ciphertext fits one gRPC
	// message with room to spare.
	MaxDataSize = 4 << 20
	// MaxContextSize bounds the context, as the region does.
	MaxContextSize = 4096

	headerSize = 3 + 1 + 2 // magic, version, blob length
	// Overhead is the size of a ciphertext less its blob and data.
	Overhead = headerSize + NonceSize + TagSize
	// MaxSize bounds a whole ciphertext.
	MaxSize = Overhead + MaxBlobSize + MaxDataSize
)

// magic starts every ciphertext: "KGW" (Krypton gateway).
var magic = [3]byte{'K', 'G', 'W'}

// Errors. Messages never echo the input.
var (
	// ErrMalformed is returned by Parse for bytes that are not a ciphertext of this format.
	ErrMalformed = errors.New("envelope: malformed ciphertext")
	// ErrVersion is returned by Parse for a ciphertext of another format version.
	ErrVersion = errors.New("envelope: unsupported ciphertext version")
	// ErrOpen is returned by Open when the payload does not authenticate under the data key and
	// context (a wrong context, a tampered ciphertext).
	ErrOpen = errors.New("envelope: ciphertext does not authenticate under this context")
	// ErrTooLarge is returned by Seal for data or a context over the limits.
	ErrTooLarge = errors.New("envelope: data or context too large")
	// ErrKeySize is returned for a data key that is not 32 bytes.
	ErrKeySize = errors.New("envelope: data key must be 32 bytes")
)

// Ciphertext is a parsed ciphertext. Its slices alias the parsed bytes.
type Ciphertext struct {
	// Blob is the wrapped data key, in the region's blob format.
	Blob []byte
	// Nonce is the AES-GCM nonce of the payload.
	Nonce []byte
	// Sealed is the AES-GCM output: the encrypted data followed by the tag.
	Sealed []byte
	// header is the bytes before the nonce, bound as additional data.
	header []byte
}

// Parse splits a ciphertext into its parts, checking its structure only (not its
// authenticity, which needs the data key). It is the one parser of the format, fuzzed.
func Parse(b []byte) (Ciphertext, error) {
	if len(b) < headerSize || len(b) > MaxSize {
		return Ciphertext{}, ErrMalformed
	}
	if [3]byte(b[:3]) != magic {
		return Ciphertext{}, ErrMalformed
	}
	if b[3] != Version {
		return Ciphertext{}, ErrVersion
	}
	n := int(binary.BigEndian.Uint16(b[4:6]))
	if n == 0 || n > MaxBlobSize || len(b) < headerSize+n+NonceSize+TagSize {
		return Ciphertext{}, ErrMalformed
	}
	if len(b)-headerSize-n-NonceSize-TagSize > MaxDataSize {
		return Ciphertext{}, ErrMalformed
	}
	h := headerSize + n
	return Ciphertext{
		Blob:   b[headerSize:h:h],
		Nonce:  b[h : h+NonceSize : h+NonceSize],
		Sealed: b[h+NonceSize:],
		header: b[:h:h],
	}, nil
}

// additionalData binds the header (format version and wrapped key) and the caller's context to
// the payload: a payload cannot be moved under another wrapped key nor opened with another
// context. The context's length comes first so that header and context cannot trade bytes.
func additionalData(header, context []byte) []byte {
	ad := make([]byte, 0, 4+len(header)+len(context))
	ad = binary.BigEndian.AppendUint32(ad, uint32(len(header)))
	ad = append(ad, header...)
	return append(ad, context...)
}

// Seal encrypts data under dataKey and returns the ciphertext holding blob (dataKey wrapped by
// the region under the same context). Each data key must seal one message only: the gateway
// makes a fresh one per Encrypt, so the random 96-bit nonce never repeats under a key.
//
// The nonce is drawn by the Go Cryptographic Module (cipher.NewGCMWithRandomNonce, which writes it
// where the format keeps it, in front of the encrypted data), so Seal works in every FIPS 140-3
// mode, including GODEBUG=fips140=only.
func Seal(dataKey, blob, data, context []byte) ([]byte, error) {
	if len(dataKey) != KeySize {
		return nil, ErrKeySize
	}
	if len(blob) == 0 || len(blob) > MaxBlobSize {
		return nil, ErrMalformed
	}
	if len(data) > MaxDataSize || len(context) > MaxContextSize {
		return nil, ErrTooLarge
	}
	aead, err := fipsmode.NewRandomNonceGCM(dataKey)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, Overhead+len(blob)+len(data))
	out = append(out, magic[:]...)
	out = append(out, Version)
	out = binary.BigEndian.AppendUint16(out, uint16(len(blob)))
	out = append(out, blob...)
	header := out[:len(out):len(out)]
	return aead.Seal(out, nil, data, additionalData(header, context)), nil
}

// SealWithNonce is Seal with a given nonce, for test vectors. Never reuse a (key, nonce) pair.
// GODEBUG=fips140=only refuses it (GCM with a caller-chosen nonce).
func SealWithNonce(dataKey, blob, data, context, nonce []byte) ([]byte, error) {
	if len(dataKey) != KeySize {
		return nil, ErrKeySize
	}
	if len(blob) == 0 || len(blob) > MaxBlobSize || len(nonce) != NonceSize {
		return nil, ErrMalformed
	}
	if len(data) > MaxDataSize || len(context) > MaxContextSize {
		return nil, ErrTooLarge
	}
	aead, err := newGCM(dataKey)
	if err != nil {
		return nil, err
	}
	out := make([]byte, 0, Overhead+len(blob)+len(data))
	out = append(out, magic[:]...)
	out = append(out, Version)
	out = binary.BigEndian.AppendUint16(out, uint16(len(blob)))
	out = append(out, blob...)
	header := out[:len(out):len(out)]
	out = append(out, nonce...)
	return aead.Seal(out, nonce, data, additionalData(header, context)), nil
}

// Open decrypts a parsed ciphertext with its data key (the region's unwrap of c.Blob).
func Open(dataKey []byte, c Ciphertext, context []byte) ([]byte, error) {
	if len(dataKey) != KeySize {
		return nil, ErrKeySize
	}
	if len(c.header) == 0 || len(c.Nonce) != NonceSize {
		return nil, ErrMalformed
	}
	data, err := fipsmode.OpenGCM(dataKey, c.Nonce, c.Sealed, additionalData(c.header, context))
	if err != nil {
		return nil, ErrOpen
	}
	return data, nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}
