package file

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"

	"github.com/kryptonkms/krypton/anchor"
	"github.com/kryptonkms/krypton/internal/fipsmode"
)

// Key file format, 73 bytes, all fixed size:
//
//	magic    16  "krypton-dev-root"
//	version   1  0x01
//	key id   16  random, assigned at creation; logged, never derived from the key
//	key      32  the AES-256 root key
//	check     8  SHA-256(magic || version || key id || key)[:8]
//
// The checksum catches a truncated or edited file before it is used to
// seal anything; it is not a MAC and needs not be one (whoever can write
// the file can write a new key).
const (
	keyFileMagic   = "krypton-dev-root"
	keyFileVersion = 1
	keyIDSize      = 16
	rootKeySize    = 32
	checkSize      = 8
	keyFileSize    = len(keyFileMagic) + 1 + keyIDSize + rootKeySize + checkSize
)

// Sealed blob format:
//
//	magic     4  "KFA\x01" (Krypton file anchor, format 1)
//	key id   16  the root key's id, so a blob of another key is told apart
//	salt     32  random per Seal
//	sealed    n  AES-256-GCM ciphertext and 16-byte tag
//
// Each Seal derives a one-time key, HKDF-SHA256(root key, salt,
// sealInfo), and seals under it with an all-zero nonce. A nonce may be
// fixed because the key is never used twice (a 32-byte random salt does
// not repeat), as age does for its file key; deriving per call rather
// than using random nonces under the root key removes GCM's 2^32-messages
// limit, mirrors how wrap derives L3 keys (DESIGN.md, "Wrapping"), and
// keeps the root key itself out of GCM. The AAD is the header (magic, key
// id, salt) followed by anchor.Context.AAD, so neither the header nor the
// Context can be changed without the tag failing.
//
// Format 2 ("KFA\x02"), written in FIPS 140-3 mode (crypto/fips140.Enabled), is the same
// derivation with AES-256-GCM through the Go Cryptographic Module's random-nonce construction:
// after the salt come the module's 12-byte random nonce, then ciphertext and tag; the AAD is the
// same (magic, key id, salt, Context). GODEBUG=fips140=only refuses the fixed zero nonce of
// format 1 for sealing; both formats open in every mode (fipsmode.OpenGCM).
const (
	blobMagic  = "KFA\x01"
	blobMagic2 = "KFA\x02"
	nonceSize  = 12
	saltSize   = 32
	tagSize    = 16
	headerSize = len(blobMagic) + keyIDSize + saltSize

	// sealInfo is the HKDF info label; one label per purpose.
	sealInfo = "krypton file anchor seal v1"
)

var zeroNonce [12]byte

type rootKey struct {
	id  [keyIDSize]byte
	key [rootKeySize]byte
}

func (k *rootKey) wipe() { clear(k.key[:]) }

func (k *rootKey) marshal() []byte {
	b := make([]byte, 0, keyFileSize)
	b = append(b, keyFileMagic...)
	b = append(b, keyFileVersion)
	b = append(b, k.id[:]...)
	b = append(b, k.key[:]...)
	sum := sha256.Sum256(b)
	return append(b, sum[:checkSize]...)
}

// parseKey parses a key file. Its errors never include the file's bytes.
func parseKey(b []byte) (*rootKey, error) {
	if len(b) != keyFileSize {
		return nil, fmt.Errorf("%w: %d bytes, want %d", ErrMalformedFile, len(b), keyFileSize)
	}
	if !bytes.Equal(b[:len(keyFileMagic)], []byte(keyFileMagic)) {
		return nil, fmt.Errorf("%w: bad magic", ErrMalformedFile)
	}
	if b[len(keyFileMagic)] != keyFileVersion {
		return nil, fmt.Errorf("%w: unknown version %d", ErrMalformedFile, b[len(keyFileMagic)])
	}
	body := b[:keyFileSize-checkSize]
	sum := sha256.Sum256(body)
	if subtle.ConstantTimeCompare(sum[:checkSize], b[keyFileSize-checkSize:]) != 1 {
		return nil, fmt.Errorf("%w: checksum mismatch", ErrMalformedFile)
	}
	k := new(rootKey)
	off := len(keyFileMagic) + 1
	copy(k.id[:], b[off:off+keyIDSize])
	copy(k.key[:], b[off+keyIDSize:off+keyIDSize+rootKeySize])
	return k, nil
}

// oneTimeKey derives the one-time key of a blob from its salt. The caller clears it.
func (k *rootKey) oneTimeKey(salt []byte) ([]byte, error) {
	dk, err := hkdf.Key(sha256.New, k.key[:], salt, sealInfo, 32)
	if err != nil {
		return nil, fmt.Errorf("file: derive key: %w", err)
	}
	return dk, nil
}

// aead returns AES-256-GCM under the one-time key derived from salt: format 1's fixed-nonce
// GCM, or format 2's random-nonce GCM in FIPS mode.
func (k *rootKey) aead(salt []byte, randomNonce bool) (cipher.AEAD, error) {
	dk, err := k.oneTimeKey(salt)
	if err != nil {
		return nil, err
	}
	defer clear(dk)
	if randomNonce {
		return fipsmode.NewRandomNonceGCM(dk)
	}
	block, err := aes.NewCipher(dk)
	if err != nil {
		return nil, fmt.Errorf("file: %w", err)
	}
	return cipher.NewGCM(block)
}

// aad returns header || ac.AAD().
func aad(header []byte, ac anchor.Context) []byte {
	return append(bytes.Clone(header), ac.AAD()...)
}
