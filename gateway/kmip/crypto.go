package kmip

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/fips140"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"

	"github.com/kryptonkms/krypton/gateway/kmip/ttlv"
	"github.com/kryptonkms/krypton/internal/fipsmode"
)

// Encrypt and Decrypt offer two modes of AES-256:
//
//   - GCM (the default). Without a nonce in the request the server draws a
//     random 96-bit nonce, encrypts under the object's key and returns the
//     nonce, with the 128-bit tag in Authenticated Encryption Tag (KMIP 1.4
//     and later). With random nonces a key is good for 2^32 encryptions.
//     A client may also send its own 96-bit nonce (KMIP auto-unseal clients
//     do). The object's key is never used with a client's nonce: a nonce
//     the client repeats, by mistake or on purpose, would give away GCM's
//     authentication key for every ciphertext under it. Instead each such
//     Encrypt draws a fresh random 256-bit salt and encrypts under
//     HKDF-SHA256(object key, salt, label || object), a key used for that
//     one message only, with the client's nonce as the GCM nonce; Data is
//     salt || ciphertext. Whatever nonces the client sends, no (key, nonce)
//     pair is used twice (up to a 2^-128 salt collision), and nothing has to
//     be remembered. Decrypt tries the plain form, then the salted form:
//     both are authenticated, so a forgery fails both.
//   - CBC with PKCS#5 padding (or none), because many KMIP clients, PyKMIP
//     among them, only speak CBC: their Encrypt result has no place for a
//     GCM tag. CBC is not authenticated; the padding check in Decrypt is a
//     padding oracle only for a client that may decrypt with the key anyway.
//
// KMIP 1.2 and 1.3 have no Authenticated Encryption Tag (nor Additional
// Data): in those versions the tag is appended to Data, as servers of that
// time did, and Decrypt takes it from the end of Data.
//
// Other modes, paddings and streaming (Init/Final Indicator, Correlation
// Value) are refused.

const (
	gcmNonceSize = 12
	gcmTagSize   = 16
	// saltSize is the random salt that opens an encryption under a
	// client's nonce (see above).
	saltSize = 32
	// maxData bounds one Encrypt or Decrypt; the message size limit is the
	// first bound, this one keeps a larger limit from meaning larger
	// cryptographic calls.
	maxData = 1 << 20
)

type cryptoParams struct {
	mode, padding uint32
	randomIV      *bool
	ivLength      int64 // as sent: bits or bytes (see ivLengthIs); 0: not given
	tagLength     int64 // bytes; 0: not given
}

// parseCryptoParams reads a Cryptographic Parameters structure (nil: none).
func parseCryptoParams(cp *ttlv.Item) (cryptoParams, error) {
	var p cryptoParams
	if cp == nil {
		return p, nil
	}
	if cp.Type != ttlv.TypeStructure {
		return p, invalidField("Cryptographic Parameters is not a structure")
	}
	for _, c := range cp.Children {
		switch c.Tag {
		case ttlv.TagBlockCipherMode:
			p.mode = uint32(c.Int)
		case ttlv.TagPaddingMethod:
			p.padding = uint32(c.Int)
		case ttlv.TagCryptographicAlgorithm:
			if uint32(c.Int) != ttlv.AlgorithmAES {
				return p, invalidField("only AES is supported")
			}
		case ttlv.TagRandomIV:
			b := c.Int == 1
			p.randomIV = &b
		case ttlv.TagIVLength:
			p.ivLength = c.Int
		case ttlv.TagTagLength:
			p.tagLength = c.Int
		case ttlv.TagKeyRoleType, ttlv.TagHashingAlgorithm:
			// Not meaningful for AES encryption; ignored as other servers do.
		default:
			return p, fail(ttlv.ReasonFeatureNotSupported, "unsupported cryptographic parameter")
		}
	}
	return p, nil
}

// check refuses combinations the server does not offer.
func (p cryptoParams) check() error {
	switch p.mode {
	case 0, ttlv.ModeGCM:
		if p.padding != 0 && p.padding != ttlv.PaddingNone {
			return invalidField("GCM takes no padding")
		}
		if p.ivLength != 0 && !ivLengthIs(p.ivLength, gcmNonceSize) {
			return invalidField("GCM nonces are 96 bits (IV Length 96, or 12 as bytes)")
		}
		if p.tagLength != 0 && p.tagLength != gcmTagSize {
			return invalidField("GCM tags are 16 bytes")
		}
	case ttlv.ModeCBC:
		if p.padding != 0 && p.padding != ttlv.PaddingPKCS5 && p.padding != ttlv.PaddingNone {
			return invalidField("CBC takes PKCS5 padding or none")
		}
		if p.ivLength != 0 && !ivLengthIs(p.ivLength, aes.BlockSize) {
			return invalidField("CBC IVs are 128 bits (IV Length 128, or 16 as bytes)")
		}
	default:
		return invalidField("block cipher modes: GCM and CBC")
	}
	return nil
}

// ivLengthIs reports whether an IV Length names n bytes. KMIP defines IV
// Length in bits, but clients send bytes too (12 for a GCM nonce). The two
// readings cannot be confused for the sizes served: a 12- or 16-byte IV in
// bits would be 96 or 128, and 12 or 16 bits is no IV any mode takes.
func ivLengthIs(l int64, n int) bool { return l == int64(8*n) || l == int64(n) }

// effective fills unset fields from the object's own Cryptographic
// Parameters, then the server's defaults (GCM; PKCS5 for CBC).
func (p cryptoParams) effective(o *object) cryptoParams {
	if p.mode == 0 {
		p.mode, p.padding = o.Mode, o.Padding
	}
	if p.mode == 0 {
		p.mode = ttlv.ModeGCM
	}
	if p.mode == ttlv.ModeCBC && p.padding == 0 {
		p.padding = ttlv.PaddingPKCS5
	}
	return p
}

// cryptoRequest reads what Encrypt and Decrypt share and returns the
// object, ready for use, with the parameters to use.
func (s *Server) cryptoRequest(r *request, p ttlv.Item, usage uint32) (*object, cryptoParams, []byte, error) {
	for _, t := range []ttlv.Tag{ttlv.TagCorrelationValue, ttlv.TagInitIndicator, ttlv.TagFinalIndicator} {
		if p.Child(t) != nil {
			return nil, cryptoParams{}, nil, fail(ttlv.ReasonFeatureNotSupported, "streaming encryption is not supported")
		}
	}
	cp, err := parseCryptoParams(p.Child(ttlv.TagCryptographicParameters))
	if err != nil {
		return nil, cp, nil, err
	}
	if err := cp.check(); err != nil {
		return nil, cp, nil, err
	}
	data := p.Child(ttlv.TagData)
	if data == nil || data.Type != ttlv.TypeByteString {
		return nil, cp, nil, invalidField("Data is required")
	}
	if len(data.Bytes) > maxData {
		return nil, cp, nil, invalidField("Data exceeds %d bytes", maxData)
	}
	o, err := s.lookup(r, p)
	if err != nil {
		return nil, cp, nil, err
	}
	if o.State != ttlv.StateActive {
		if err := usable(r, o); err != nil {
			return nil, cp, nil, err
		}
		return nil, cp, nil, stateError(r, "the object is not active")
	}
	if uint32(o.UsageMask)&usage == 0 {
		return nil, cp, nil, fail(ttlv.ReasonPermissionDenied, "the object's usage mask forbids this operation")
	}
	return o, cp.effective(o), data.Bytes, nil
}

func optionalBytes(p ttlv.Item, tag ttlv.Tag) ([]byte, bool, error) {
	it := p.Child(tag)
	if it == nil {
		return nil, false, nil
	}
	if it.Type != ttlv.TypeByteString {
		return nil, false, invalidField("a byte string was expected")
	}
	return it.Bytes, true, nil
}

func (s *Server) encrypt(ctx context.Context, r *request, p ttlv.Item) ([]ttlv.Item, error) {
	o, cp, data, err := s.cryptoRequest(r, p, ttlv.UsageEncrypt)
	if err != nil {
		return nil, err
	}
	iv, haveIV, err := optionalBytes(p, ttlv.TagIVCounterNonce)
	if err != nil {
		return nil, err
	}
	if haveIV && cp.randomIV != nil && *cp.randomIV {
		return nil, invalidField("Random IV and an IV/Counter/Nonce both given")
	}
	aad, _, err := optionalBytes(p, ttlv.TagAuthenticatedEncryptionAdditionalData)
	if err != nil {
		return nil, err
	}
	key, err := s.unwrap(ctx, r, o)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	out := []ttlv.Item{ttlv.Text(ttlv.TagUniqueIdentifier, o.ID)}
	switch cp.mode {
	case ttlv.ModeGCM:
		nonce, prefix, gcmKey := iv, []byte(nil), key
		if haveIV {
			if len(iv) != gcmNonceSize {
				return nil, invalidField("GCM nonces are 12 bytes")
			}
			if fips140.Enforced() {
				// SP 800-38D's IV rules, as the Go Cryptographic Module enforces them: the
				// module draws GCM nonces; a caller's nonce is refused.
				return nil, invalidField("a client-supplied GCM nonce is refused in FIPS 140-only mode (GODEBUG=fips140=only): omit IV/Counter/Nonce and the server draws one")
			}
			// A client's nonce: a fresh key for this one message.
			prefix = make([]byte, saltSize)
			if _, err := rand.Read(prefix); err != nil {
				return nil, err
			}
			if gcmKey, err = clientNonceKey(r, o, key, prefix); err != nil {
				return nil, err
			}
		}
		var sealed []byte
		if haveIV {
			aead, err := newGCM(gcmKey)
			if err != nil {
				return nil, err
			}
			sealed = aead.Seal(prefix, nonce, data, aad)
		} else {
			// The module draws the nonce (cipher.NewGCMWithRandomNonce), so this works in
			// FIPS 140-only mode; it is written in front of the ciphertext.
			aead, err := fipsmode.NewRandomNonceGCM(gcmKey)
			if err != nil {
				return nil, err
			}
			out := aead.Seal(nil, nil, data, aad)
			nonce, sealed = out[:gcmNonceSize], out[gcmNonceSize:]
		}
		ct, tag := sealed, []byte(nil)
		if r.v.atLeast(1, 4) {
			// Before 1.4 there is no tag field: the tag stays at the end
			// of Data.
			ct, tag = sealed[:len(sealed)-gcmTagSize], sealed[len(sealed)-gcmTagSize:]
		}
		out = append(out, ttlv.Bytes(ttlv.TagData, ct))
		if !haveIV {
			out = append(out, ttlv.Bytes(ttlv.TagIVCounterNonce, nonce))
		}
		if tag != nil {
			out = append(out, ttlv.Bytes(ttlv.TagAuthenticatedEncryptionTag, tag))
		}
	case ttlv.ModeCBC:
		if len(aad) > 0 {
			return nil, invalidField("CBC takes no additional data")
		}
		generated := !haveIV
		if haveIV {
			if len(iv) != aes.BlockSize {
				return nil, invalidField("CBC IVs are 16 bytes")
			}
		} else {
			iv = make([]byte, aes.BlockSize)
			if _, err := rand.Read(iv); err != nil {
				return nil, err
			}
		}
		var pt []byte
		if cp.padding == ttlv.PaddingPKCS5 {
			pt = pkcs7Pad(data)
			r.wipe = append(r.wipe, pt)
		} else {
			if len(data)%aes.BlockSize != 0 {
				return nil, invalidField("without padding, CBC data must be whole blocks")
			}
			pt = data
		}
		ct := make([]byte, len(pt))
		cipher.NewCBCEncrypter(block, iv).CryptBlocks(ct, pt)
		out = append(out, ttlv.Bytes(ttlv.TagData, ct))
		if generated {
			out = append(out, ttlv.Bytes(ttlv.TagIVCounterNonce, iv))
		}
	}
	return out, nil
}

func (s *Server) decrypt(ctx context.Context, r *request, p ttlv.Item) ([]ttlv.Item, error) {
	o, cp, data, err := s.cryptoRequest(r, p, ttlv.UsageDecrypt)
	if err != nil {
		return nil, err
	}
	iv, haveIV, err := optionalBytes(p, ttlv.TagIVCounterNonce)
	if err != nil {
		return nil, err
	}
	aad, _, err := optionalBytes(p, ttlv.TagAuthenticatedEncryptionAdditionalData)
	if err != nil {
		return nil, err
	}
	tag, haveTag, err := optionalBytes(p, ttlv.TagAuthenticatedEncryptionTag)
	if err != nil {
		return nil, err
	}
	if !haveIV {
		return nil, invalidField("IV/Counter/Nonce is required")
	}
	var pt []byte
	switch cp.mode {
	case ttlv.ModeGCM:
		if len(iv) != gcmNonceSize {
			return nil, invalidField("GCM nonces are 12 bytes")
		}
		if !haveTag && !r.v.atLeast(1, 4) && len(data) >= gcmTagSize {
			// KMIP 1.2 and 1.3: the tag ends Data.
			data, tag, haveTag = data[:len(data)-gcmTagSize], data[len(data)-gcmTagSize:], true
		}
		if !haveTag || len(tag) != gcmTagSize {
			return nil, invalidField("a 16-byte Authenticated Encryption Tag is required")
		}
	case ttlv.ModeCBC:
		if len(iv) != aes.BlockSize {
			return nil, invalidField("CBC IVs are 16 bytes")
		}
		if len(data) == 0 || len(data)%aes.BlockSize != 0 {
			return nil, invalidField("CBC data must be whole blocks")
		}
		if haveTag || len(aad) > 0 {
			return nil, invalidField("CBC takes no tag or additional data")
		}
	}
	key, err := s.unwrap(ctx, r, o)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	switch cp.mode {
	case ttlv.ModeGCM:
		if pt, err = s.openGCM(r, o, key, iv, data, tag, aad); err != nil {
			return nil, err
		}
	case ttlv.ModeCBC:
		buf := make([]byte, len(data))
		cipher.NewCBCDecrypter(block, iv).CryptBlocks(buf, data)
		r.wipe = append(r.wipe, buf)
		pt = buf
		if cp.padding == ttlv.PaddingPKCS5 {
			n, ok := pkcs7Unpad(buf)
			if !ok {
				return nil, fail(ttlv.ReasonCryptographicFailure, "bad padding")
			}
			pt = buf[:n]
		}
	}
	r.wipe = append(r.wipe, pt)
	return []ttlv.Item{ttlv.Text(ttlv.TagUniqueIdentifier, o.ID), ttlv.Bytes(ttlv.TagData, pt)}, nil
}

// openGCM opens a GCM ciphertext made by encrypt: under the object's key
// with the server's nonce, or (Data at least a salt long) under the key of a
// client's nonce, salt || ciphertext. The two forms are not marked apart, so
// both are tried; each is authenticated, so a forgery fails both, and a
// message of one form opens under the other only with probability 2^-128.
func (s *Server) openGCM(r *request, o *object, key, nonce, data, tag, aad []byte) ([]byte, error) {
	sealed := make([]byte, 0, len(data)+len(tag))
	sealed = append(append(sealed, data...), tag...)
	r.wipe = append(r.wipe, sealed)
	// fipsmode.OpenGCM works in every mode, GODEBUG=fips140=only included.
	if pt, err := fipsmode.OpenGCM(key, nonce, sealed, aad); err == nil {
		return pt, nil
	}
	if len(data) >= saltSize {
		sub, err := clientNonceKey(r, o, key, data[:saltSize])
		if err != nil {
			return nil, err
		}
		if pt, err := fipsmode.OpenGCM(sub, nonce, sealed[saltSize:], aad); err == nil {
			return pt, nil
		}
	}
	return nil, fail(ttlv.ReasonCryptographicFailure, "authentication failed")
}

// clientNonceKey derives the one-message key of an encryption under a
// client's nonce: HKDF-SHA256 (crypto/hkdf) of the object's key with the
// message's random salt, bound by its info to the object (tenant, service,
// unique identifier) like the wrapped key itself. The request wipes it.
func clientNonceKey(r *request, o *object, key, salt []byte) ([]byte, error) {
	info := append([]byte("krypton-kmip-gcm-client-nonce-v1\x00"), objectAAD(r.sess.id, o.ID)...)
	sub, err := hkdf.Key(sha256.New, key, salt, string(info), 32)
	if err != nil {
		return nil, err
	}
	r.wipe = append(r.wipe, sub)
	return sub, nil
}

func newGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// pkcs7Pad pads to whole AES blocks (KMIP's "PKCS5" padding for a 16-byte
// block cipher is PKCS#7).
func pkcs7Pad(b []byte) []byte {
	n := aes.BlockSize - len(b)%aes.BlockSize
	out := make([]byte, len(b)+n)
	copy(out, b)
	for i := len(b); i < len(out); i++ {
		out[i] = byte(n)
	}
	return out
}

// pkcs7Unpad returns the unpadded length of b, checking every padding byte
// without branching on their values.
func pkcs7Unpad(b []byte) (int, bool) {
	n := int(b[len(b)-1])
	good := subtle.ConstantTimeLessOrEq(1, n) & subtle.ConstantTimeLessOrEq(n, aes.BlockSize)
	for i := 1; i <= aes.BlockSize; i++ {
		inPad := subtle.ConstantTimeLessOrEq(i, n)
		match := subtle.ConstantTimeByteEq(b[len(b)-i], byte(n))
		good &= ^inPad&1 | match
	}
	if good != 1 {
		return 0, false
	}
	return len(b) - n, true
}
