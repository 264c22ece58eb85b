package pkcs11

// A sealed blob is
//
//	format  1 byte  (formatGCM)
//	iv     12 bytes (random, from crypto/rand)
//	ct||tag         (C_Encrypt with CKM_AES_GCM: len(plaintext) + 16 bytes)
//
// so a 32-byte tenant key seals to 61 bytes. The additional data is
// anchor.Context.AAD() exactly, as for every provider that takes AAD; the
// IV is authenticated by GCM itself, and the format byte is checked
// before anything is sent to the token.
//
// The IV is drawn by Krypton from crypto/rand rather than by the token:
// PKCS#11 2.40 lets the caller supply it, SoftHSM2 uses the one given, and
// modules that generate their own (CloudHSM) write it back into the
// parameters, which seal reads so that the blob always carries the IV that
// was used. With random 96-bit IVs a key must not seal more than 2^32
// blobs (NIST SP 800-38D 8.3); an L1 seals one blob per tenant key
// version and a probe per Check, far below that.
const (
	formatGCM = 0x01
	ivSize    = 12
	tagBits   = 128
	tagSize   = tagBits / 8
	// headerSize is the format byte and the IV.
	headerSize = 1 + ivSize
	// minSealed is the shortest blob Seal makes (a 1-byte plaintext).
	minSealed = headerSize + 1 + tagSize
)
