package wrap

import (
	"encoding/binary"
	"fmt"
)

// Sizes of the parts of a key and a blob, in bytes. docs/format.md is the
// full specification.
const (
	// KeySize is the size of every key in the hierarchy: 256 bits.
	KeySize = 32
	// SaltSize is the size of the random salt from which each one-time
	// key is derived.
	SaltSize = 32
	// NonceSize is the AES-GCM nonce size.
	NonceSize = 12
	// TagSize is the AES-GCM authentication tag size.
	TagSize = 16

	// MaxContextSize is the longest caller context (additional
	// authenticated data) that Wrap and Unwrap accept. transport refuses
	// longer ones before they reach a key.
	MaxContextSize = 4096

	// MaxBlobSize is the longest blob this format can produce or accept,
	// 235 bytes: a sealed service key whose tenant and service names are
	// 64 bytes long (its parent, an L2, has an empty service). Wrapped
	// data keys are at most 230 bytes. transport uses it to bound request
	// sizes.
	MaxBlobSize = fixedHeaderSize + (1 + MaxNameLen) + 1 + 4 + (1 + MaxNameLen) + 4 +
		SaltSize + NonceSize + KeySize + TagSize

	fixedHeaderSize = 4 // magic, format version, kind, KDF id
	ciphertextSize  = KeySize + TagSize
)

const (
	// magic is the first byte of every blob ('K'), so that a blob is
	// recognisable in a hex dump and a random or foreign byte string is
	// refused early.
	magic byte = 0x4B
	// formatVersion is the second byte. A reader refuses versions it does
	// not know with ErrUnsupportedVersion rather than guess.
	formatVersion byte = 1
)

// Kind says what a blob holds and under which kind of key.
type Kind uint8

const (
	// KindSealedServiceKey is a service key (L3) sealed under a tenant
	// key (L2). The header names the L2 (Parent) and the L3 (Subject).
	KindSealedServiceKey Kind = 1
	// KindWrappedDataKey is a data key (L4) wrapped under a service key
	// (L3). The header names the L3 (Parent).
	KindWrappedDataKey Kind = 2
)

func (k Kind) String() string {
	switch k {
	case KindSealedServiceKey:
		return "sealed-service-key"
	case KindWrappedDataKey:
		return "wrapped-data-key"
	}
	return fmt.Sprintf("kind(%d)", uint8(k))
}

// Header is the public part of a blob: which key it needs and how its
// one-time key was derived. A server reads it with ParseHeader to find the
// key before it has it.
type Header struct {
	// Version is the format version (1).
	Version uint8
	Kind    Kind
	KDF     KDF
	// Parent is the key that opens the blob: a tenant key (L2) for
	// KindSealedServiceKey, a service key (L3) for KindWrappedDataKey.
	Parent KeyID
	// Subject is the sealed service key's identity for
	// KindSealedServiceKey, and the zero KeyID for KindWrappedDataKey
	// (data keys have no identity).
	Subject KeyID
	Salt    [SaltSize]byte
	Nonce   [NonceSize]byte
}

// rawHeader is the parser's view of a blob: it points into the blob and
// allocates nothing, so the unwrap path can compare names with a key's id
// without making strings.
type rawHeader struct {
	kind        Kind
	kdf         KDF
	tenant      []byte
	service     []byte // parent's service; empty for KindSealedServiceKey
	version     uint32 // parent's version
	subjService []byte // KindSealedServiceKey only
	subjVersion uint32 // KindSealedServiceKey only
	salt        *[SaltSize]byte
	nonce       *[NonceSize]byte
	size        int // header length: blob[:size] is authenticated, blob[size:] is the ciphertext
}

// ParseHeader parses the header of blob and checks that the whole blob is
// well formed (no truncation, no trailing bytes). It does no cryptography:
// a header that parses is not yet authentic. Errors wrap ErrMalformed or
// ErrUnsupportedVersion and never echo the blob's bytes.
//
//	h, err := wrap.ParseHeader(blob)
//	if err != nil { ... }
//	l3 := keyring.Service(h.Parent) // then l3.Unwrap(blob, context)
func ParseHeader(blob []byte) (Header, error) {
	r, err := parse(blob)
	if err != nil {
		return Header{}, err
	}
	h := Header{
		Version: formatVersion,
		Kind:    r.kind,
		KDF:     r.kdf,
		Parent:  KeyID{Tenant: string(r.tenant), Service: string(r.service), Version: r.version},
		Salt:    *r.salt,
		Nonce:   *r.nonce,
	}
	if r.kind == KindSealedServiceKey {
		h.Subject = KeyID{Tenant: h.Parent.Tenant, Service: string(r.subjService), Version: r.subjVersion}
	}
	return h, nil
}

// parse is the one parser of blobs; everything that reads a blob calls it.
// It is fuzzed by FuzzParse and FuzzUnwrap.
func parse(blob []byte) (rawHeader, error) {
	var h rawHeader
	if len(blob) > MaxBlobSize {
		return h, fmt.Errorf("%w: %d bytes, longer than %d", ErrMalformed, len(blob), MaxBlobSize)
	}
	if len(blob) < fixedHeaderSize {
		return h, fmt.Errorf("%w: truncated", ErrMalformed)
	}
	if blob[0] != magic {
		return h, fmt.Errorf("%w: bad magic byte", ErrMalformed)
	}
	if blob[1] != formatVersion {
		return h, fmt.Errorf("%w: format version %d", ErrUnsupportedVersion, blob[1])
	}
	h.kind = Kind(blob[2])
	if h.kind != KindSealedServiceKey && h.kind != KindWrappedDataKey {
		return h, fmt.Errorf("%w: kind %d", ErrUnsupportedVersion, blob[2])
	}
	h.kdf = KDF(blob[3])
	if !h.kdf.known() {
		return h, fmt.Errorf("%w: KDF id %d", ErrUnsupportedVersion, blob[3])
	}
	p := blob[fixedHeaderSize:]
	var ok bool
	if h.tenant, p, ok = readName(p); !ok || len(h.tenant) == 0 {
		return h, fmt.Errorf("%w: bad tenant field", ErrMalformed)
	}
	if h.service, p, ok = readName(p); !ok {
		return h, fmt.Errorf("%w: bad service field", ErrMalformed)
	}
	if h.version, p, ok = readVersion(p); !ok {
		return h, fmt.Errorf("%w: bad version field", ErrMalformed)
	}
	switch h.kind {
	case KindSealedServiceKey:
		if len(h.service) != 0 {
			return h, fmt.Errorf("%w: sealed service key under a key with a service", ErrMalformed)
		}
		if h.subjService, p, ok = readName(p); !ok || len(h.subjService) == 0 {
			return h, fmt.Errorf("%w: bad sealed service field", ErrMalformed)
		}
		if h.subjVersion, p, ok = readVersion(p); !ok {
			return h, fmt.Errorf("%w: bad sealed version field", ErrMalformed)
		}
	case KindWrappedDataKey:
		if len(h.service) == 0 {
			return h, fmt.Errorf("%w: wrapped data key under a key without a service", ErrMalformed)
		}
	}
	if len(p) != SaltSize+NonceSize+ciphertextSize {
		return h, fmt.Errorf("%w: %d bytes after the key names, want %d", ErrMalformed, len(p), SaltSize+NonceSize+ciphertextSize)
	}
	h.salt = (*[SaltSize]byte)(p[:SaltSize])
	h.nonce = (*[NonceSize]byte)(p[SaltSize : SaltSize+NonceSize])
	if !h.kdf.randomNonce() && !counterNonce(h.nonce) {
		// Every writer of the counter suites counts nonces from zero under one salt and derives
		// a new key every ItemsPerDerivedKey items, so no honest blob has another nonce; one that
		// does was sealed by a holder of a delegated key (WrapDelegate) past the count it was
		// handed out for.
		return h, fmt.Errorf("%w: a nonce beyond the %d items one derived key seals", ErrMalformed, ItemsPerDerivedKey)
	}
	h.size = len(blob) - ciphertextSize
	return h, nil
}

// counterNonce says whether n is nonceFor(c) for some c below ItemsPerDerivedKey.
func counterNonce(n *[NonceSize]byte) bool {
	return binary.BigEndian.Uint32(n[:4]) == 0 && binary.BigEndian.Uint64(n[4:]) < ItemsPerDerivedKey
}

// readName reads a length-prefixed name and checks it with the same rules
// as ValidateName (an empty name is allowed here; callers decide).
func readName(p []byte) (name, rest []byte, ok bool) {
	if len(p) < 1 {
		return nil, nil, false
	}
	n := int(p[0])
	if n > MaxNameLen || len(p) < 1+n {
		return nil, nil, false
	}
	name = p[1 : 1+n]
	if n > 0 && validateNameBytes(name) != nil {
		return nil, nil, false
	}
	return name, p[1+n:], true
}

func readVersion(p []byte) (v uint32, rest []byte, ok bool) {
	if len(p) < 4 {
		return 0, nil, false
	}
	v = binary.BigEndian.Uint32(p)
	return v, p[4:], v != 0
}

// headerSize is the length of the header appendHeader writes.
func headerSize(kind Kind, parent, subject KeyID) int {
	n := fixedHeaderSize + 1 + len(parent.Tenant) + 1 + len(parent.Service) + 4 + SaltSize + NonceSize
	if kind == KindSealedServiceKey {
		n += 1 + len(subject.Service) + 4
	}
	return n
}

// appendHeader appends the header for a blob to b. The ids must have been
// validated (names of at most MaxNameLen bytes). A nil nonce ends the
// header after the salt.
func appendHeader(b []byte, kind Kind, kdf KDF, parent, subject KeyID, salt *[SaltSize]byte, nonce *[NonceSize]byte) []byte {
	b = append(b, magic, formatVersion, byte(kind), byte(kdf))
	b = append(b, byte(len(parent.Tenant)))
	b = append(b, parent.Tenant...)
	b = append(b, byte(len(parent.Service)))
	b = append(b, parent.Service...)
	b = binary.BigEndian.AppendUint32(b, parent.Version)
	if kind == KindSealedServiceKey {
		b = append(b, byte(len(subject.Service)))
		b = append(b, subject.Service...)
		b = binary.BigEndian.AppendUint32(b, subject.Version)
	}
	b = append(b, salt[:]...)
	if nonce != nil { // nil: the random-nonce AEAD writes it
		b = append(b, nonce[:]...)
	}
	return b
}

// appendAAD appends the additional data that GCM authenticates: the whole
// header, then the caller's context with a 4-byte big-endian length
// prefix. The header is self-delimiting and the context is
// length-prefixed, so no two (header, context) pairs give the same AAD.
func appendAAD(b, header, context []byte) []byte {
	b = append(b, header...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(context)))
	return append(b, context...)
}
