// Package fipsmode reports the process's FIPS 140-3 mode and gives the AES-GCM constructions that
// work in every mode, including GODEBUG=fips140=only, where the Go Cryptographic Module refuses
// GCM with caller-chosen nonces (cipher.NewGCM) altogether. docs/security.md, "FIPS 140-3 mode",
// says how to build and run in that mode and what stays outside the module.
package fipsmode

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/fips140"
	"errors"
	"fmt"
	"strings"
)

// Mode is the FIPS 140-3 mode of the process: "off" (a normal run), "on" (GODEBUG=fips140=on, or
// a binary built with GOFIPS140 set: the module runs its self-tests and uses approved algorithms
// where a choice exists) or "only" (GODEBUG=fips140=only: non-approved algorithms fail).
func Mode() string {
	switch {
	case !fips140.Enabled():
		return "off"
	case fips140.Enforced():
		return "only"
	}
	return "on"
}

// Describe is Mode with the module version, for `krypton version` and start-up logs:
// "fips140=only, Go Cryptographic Module v1.0.0-c2097c7c".
func Describe() string {
	if Mode() == "off" {
		return "fips140=off"
	}
	return fmt.Sprintf("fips140=%s, Go Cryptographic Module %s", Mode(), fips140.Version())
}

// ErrRefused is wrapped by errors of operations that FIPS 140-only mode refuses, so callers and
// operators see the cause rather than a generic failure.
var ErrRefused = errors.New("refused in FIPS 140-only mode (GODEBUG=fips140=only)")

// NewRandomNonceGCM returns AES-GCM under key with nonces drawn by the module
// (cipher.NewGCMWithRandomNonce, SP 800-38D §8.2.2): Seal(dst, nil, pt, aad) appends
// nonce || ciphertext || tag, Open(dst, nil, nonce||ciphertext||tag, aad) reads them. Approved in
// every mode. A key must seal fewer than 2^32 messages.
func NewRandomNonceGCM(key []byte) (cipher.AEAD, error) {
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCMWithRandomNonce(block)
}

// OpenGCM decrypts ciphertext (encrypted data then the 16-byte tag) sealed with AES-GCM under key
// with the given 12-byte nonce, in every mode. Decrypting with a caller-given nonce is allowed by
// SP 800-38D (the nonce rules bind the encrypting side); under fips140=only it goes through the
// random-nonce construction's Open, which takes the nonce in front of the ciphertext, since
// cipher.NewGCM is refused there.
func OpenGCM(key, nonce, ciphertext, aad []byte) ([]byte, error) {
	if len(nonce) != 12 {
		return nil, fmt.Errorf("fipsmode: GCM nonce of %d bytes, want 12", len(nonce))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	if !fips140.Enforced() {
		aead, err := cipher.NewGCM(block)
		if err != nil {
			return nil, err
		}
		return aead.Open(nil, nonce, ciphertext, aad)
	}
	aead, err := cipher.NewGCMWithRandomNonce(block)
	if err != nil {
		return nil, err
	}
	in := make([]byte, 0, len(nonce)+len(ciphertext))
	in = append(append(in, nonce...), ciphertext...)
	return aead.Open(nil, nil, in, aad)
}

// fipsPhrase is what every refusal of the Go Cryptographic Module in FIPS 140-only mode says,
// and what Krypton's own refusals (ErrRefused, wrap.ErrFIPSMode) say too.
const fipsPhrase = "FIPS 140-only mode"

// Cause reports whether err is a refusal by FIPS 140-only mode, and if so the sentence that names
// it: Go's own ("crypto/cipher: use of GCM with arbitrary IVs is not allowed in FIPS 140-only
// mode, use NewGCMWithRandomNonce"), from its "crypto/" prefix on, or, for Krypton's refusals,
// the whole message. The crypto packages' refusals are fixed strings and carry no input, so the
// sentence is safe to return to a client; a status that said only "root key unusable" would
// hide why.
func Cause(err error) (string, bool) {
	if err == nil {
		return "", false
	}
	s := err.Error()
	i := strings.Index(s, fipsPhrase)
	if i < 0 {
		return "", false
	}
	if errors.Is(err, ErrRefused) {
		return s, true
	}
	j := strings.LastIndex(s[:i], "crypto/")
	cause := s[j+1:] // Krypton's own refusals (wrap.ErrFIPSMode) say why in full
	if j >= 0 {
		cause = s[j:]
	}
	if len(cause) > 240 {
		cause = cause[:240]
	}
	return cause, true
}
