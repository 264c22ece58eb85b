// Package xks is the gateway's AWS KMS External Key Store (XKS) proxy front end: the four
// operations of the XKS Proxy API (GetKeyMetadata, Encrypt, Decrypt, GetHealthStatus) over HTTPS,
// requests authenticated by AWS SigV4 with rotatable credentials, optional mutual TLS.
//
// An external key is a 32-byte key wrapped by the Krypton region under the gateway's service key
// (its blob is kept in the keys file); every operation has the region (or the gateway's
// revocation-coherent cache) unwrap it, so revoking the service key, locking the tenant or
// disabling its anchor stops AWS KMS from encrypting or decrypting at once. User documentation is
// in docs/xks.md, the ciphertext format in docs/format.md.
package xks
