// Package pkcs11 is the PKCS#11 anchor: Krypton's HYOK path ("hold your
// own key"). The customer's root key (L1) is an AES-256 key inside their
// own HSM; it never leaves it. Krypton only asks the token, through the
// vendor's PKCS#11 module, to encrypt and decrypt 32-byte tenant keys
// (L2) with CKM_AES_GCM.
//
//	import _ "github.com/kryptonkms/krypton/anchor/pkcs11"
//
//	p, err := anchor.Open(ctx,
//		"pkcs11:token=krypton;object=root-2026"+
//			"?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:/etc/krypton/hsm.pin",
//		anchor.Options{Logger: log, Provider: map[string]any{"pkcs11": pkcs11.Options{Sessions: 4}}})
//
// # URI
//
// An RFC 7512 URI (see anchor.PKCS11URI). token is the token's label: the
// token is looked up by label, not by slot number, because slot ids change
// when tokens are initialised. object is the key's CKA_LABEL (id, its
// CKA_ID, may narrow it); serial and slot-id, if given, must match too.
// module-path names the vendor's library (module-name is not supported).
// pin-source=file:/path names a file holding the user PIN (one trailing
// newline is ignored). pin-value=... puts the PIN in the URI itself: Open
// accepts it (tests, a one-off check that stores nothing), but a tenant's
// anchor is stored in every Raft log, snapshot and backup, so governance
// and the region refuse pin-value there (anchor.CheckStorable) and name
// pin-source as the fix. The PIN never appears in an error, a log or
// Describe, and anchor.Redact shows a stored one as "xxxxx".
//
// # The key
//
// The key must be a token object (CKA_TOKEN=true) of type CKK_AES with
// CKA_VALUE_LEN=32, CKA_SENSITIVE=true, CKA_EXTRACTABLE=false, and
// CKA_ENCRYPT=true and CKA_DECRYPT=true. Open refuses any other key (an
// extractable key is not held by the customer alone). With SoftHSM2 and
// OpenSC:
//
//	softhsm2-util --init-token --free --label krypton --so-pin $SO_PIN --pin $PIN
//	pkcs11-tool --module /usr/lib/softhsm/libsofthsm2.so --token-label krypton \
//		--login --pin $PIN --keygen --key-type AES:32 --label root-2026 --sensitive
//	pkcs11-tool --module /usr/lib/softhsm/libsofthsm2.so --token-label krypton \
//		--login --pin $PIN --list-objects --type secrkey   # check the flags above
//
// (softhsm2-util cannot generate secret keys; OpenSC versions differ in
// their defaults, so check the flags Open requires.) An HSM's own
// administration tool does the same with C_GenerateKey(CKM_AES_KEY_GEN).
//
// # Operations
//
// Seal is C_Encrypt with CKM_AES_GCM, a 96-bit IV drawn from crypto/rand,
// a 128-bit tag and anchor.Context.AAD() as additional data (SoftHSM2
// crashes on GCM without AAD; there always is one); format.go gives the
// blob's bytes. Unseal is C_Decrypt likewise. Check finds the key, reads
// CKA_ENCRYPT and CKA_DECRYPT, and seals and unseals a probe.
//
// A module is loaded and initialised (C_Initialize) once per process and
// shared by every Provider on the same module path; the last Close
// finalises it. The user logs in once per process and token (PKCS#11
// login state is not per session); a second Provider on the same token
// must give the same PIN. Each Provider keeps a small pool of sessions
// (Options.Sessions, default 4), one per operation in flight, since a
// session is not safe for concurrent use. A session that breaks is
// dropped and the next operation opens and logs in a new one.
//
// # Kill switch
//
// The customer stops Krypton from their HSM:
//
//   - CKA_ENCRYPT or CKA_DECRYPT set false on the key (C_SetAttributeValue):
//     the next Seal, Unseal and Check are denied with anchor.ErrDisabled
//     (the token answers CKR_KEY_FUNCTION_NOT_PERMITTED). Setting them true
//     again restores service; nothing is lost.
//   - The key destroyed (C_DestroyObject): the key is looked up by label
//     on every call, so the next call is denied with anchor.ErrDestroyed.
//     Every blob sealed under it is lost for good. A new key made with the
//     same label does not open the old blobs (ErrInvalidCiphertext).
//   - The token removed, unplugged or unreachable: CKR_TOKEN_NOT_PRESENT,
//     CKR_DEVICE_REMOVED, CKR_DEVICE_ERROR and lost sessions are
//     transient, since an outage looks the same; the region leader locks
//     the tenant out when its grace period ends.
//   - The user PIN changed (or locked): this process stays logged in while
//     it holds a session on the token, so the change takes effect when the
//     login is lost (all sessions closed, the token logs out, a restart or
//     a new leader): logging in then fails with CKR_PIN_INCORRECT or
//     CKR_PIN_LOCKED, and every call is denied with anchor.ErrAccessDenied.
//     For an immediate stop, disable or destroy the key.
package pkcs11
