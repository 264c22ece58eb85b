package kmip

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/subtle"

	"github.com/kryptonkms/krypton/gateway/kmip/ttlv"
)

// Encrypt and Decrypt offer two modes of AES-256:
//
//   - GCM (the default): the server draws a random 96-bit nonce for every
//     Encrypt and returns it, with the 128-bit tag in Authenticated
//     Encryption Tag (KMIP 1.4 and later). A client may not choose the
//     nonce: with random nonces the key is good for 2^32 encryptions, and a
//     repeated nonce would reveal GCM's authentication key.
//   - CBC with PKCS#5 padding (or none), because many KMIP clients, PyKMIP
//     among them, only speak CBC: their Encrypt result has no place for a
//     GCM tag. CBC is not authenticated; the padding check in Decrypt is a
//     padding oracle only for a client that may decrypt with the key anyway.
//
// Other modes, paddings and streaming (Init/Final Indicator, Correlation
// Value) are refused.

const (
	gcmNonceSize = 12
	gcmTagSize   = 16
	// maxData bounds one Encrypt or Decrypt; the message size limit is the
	// first bound, this one keeps a larger limit from meaning larger
	// cryptographic calls.
	maxData = 1 << 20
)

type cryptoParams struct {
	mode, padding uint32
	randomIV      *bool
	ivLength      int64 // bits; 0: not given
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
		if p.ivLength != 0 && p.ivLength != 8*gcmNonceSize {
			return invalidField("GCM nonces are 96 bits")
		}
		if p.tagLength != 0 && p.tagLength != gcmTagSize {
			return invalidField("GCM tags are 16 bytes")
		}
	case ttlv.ModeCBC:
		if p.padding != 0 && p.padding != ttlv.PaddingPKCS5 && p.padding != ttlv.PaddingNone {
			return invalidField("CBC takes PKCS5 padding or none")
		}
		if p.ivLength != 0 && p.ivLength != 8*aes.BlockSize {
			return invalidField("CBC IVs are 128 bits")
		}
	default:
		return invalidField("block cipher modes: GCM and CBC")
	}
	return nil
}

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
		if haveIV {
			return nil, invalidField("the server chooses GCM nonces")
		}
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, err
		}
		nonce := make([]byte, gcmNonceSize)
		if _, err := rand.Read(nonce); err != nil {
			return nil, err
		}
		sealed := aead.Seal(nil, nonce, data, aad)
		ct, tag := sealed[:len(data)], sealed[len(data):]
		out = append(out,
			ttlv.Bytes(ttlv.TagData, ct),
			ttlv.Bytes(ttlv.TagIVCounterNonce, nonce),
			ttlv.Bytes(ttlv.TagAuthenticatedEncryptionTag, tag))
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
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, err
		}
		sealed := make([]byte, 0, len(data)+len(tag))
		sealed = append(append(sealed, data...), tag...)
		pt, err = aead.Open(nil, iv, sealed, aad)
		if err != nil {
			return nil, fail(ttlv.ReasonCryptographicFailure, "authentication failed")
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
