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
const (
	blobMagic  = "KFA\x01"
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

// aead returns AES-256-GCM under the one-time key derived from salt.
func (k *rootKey) aead(salt []byte) (cipher.AEAD, error) {
	dk, err := hkdf.Key(sha256.New, k.key[:], salt, sealInfo, 32)
	if err != nil {
		return nil, fmt.Errorf("file: derive key: %w", err)
	}
	defer clear(dk)
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
