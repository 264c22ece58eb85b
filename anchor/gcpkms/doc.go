// Package gcpkms is the Google Cloud KMS anchor: the customer's L1 root key
// is a symmetric (ENCRYPT_DECRYPT, GOOGLE_SYMMETRIC_ENCRYPTION) crypto key
// in their project, and Krypton asks Cloud KMS to encrypt and decrypt
// tenant keys (L2) under it. It registers the "gcpkms" scheme:
//
//	import _ "github.com/kryptonkms/krypton/anchor/gcpkms"
//
//	p, err := anchor.Open(ctx, "gcpkms://projects/P/locations/L/keyRings/R/cryptoKeys/K", anchor.Options{Logger: log})
//
// The URI names the crypto key, never a version:
// gcpkms://projects/P/locations/L/keyRings/R/cryptoKeys/K[?endpoint=HOST:PORT].
// Cloud KMS encrypts with the key's primary version and finds the version
// from the ciphertext on decrypt, so rotating the key needs no change in
// Krypton.
//
// # Seal and Unseal
//
// Seal is Encrypt with anchor.Context.AAD() as additional authenticated
// data; the sealed blob is Cloud KMS's ciphertext as it is (it names its
// version), so it opens only under the same key and Context. Unseal is
// Decrypt with the same AAD. Every request carries the CRC32C (Castagnoli)
// of its data (plaintext_crc32c or ciphertext_crc32c, and
// additional_authenticated_data_crc32c), and every response is checked:
// Encrypt must report verified_plaintext_crc32c and
// verified_additional_authenticated_data_crc32c and a ciphertext_crc32c
// that matches; Decrypt a plaintext_crc32c that matches. A mismatch is a
// transient error (anchor.ErrUnavailable): Google's guidance is to retry
// a limited number of times, which anchor.Retry does.
//
// The client library's own retries are turned off: a call fails after
// Options.CallTimeout (or the caller's deadline) and reports its error
// at once, so Check sees an outage and anchor.Retry alone decides.
//
// # Errors
//
// gRPC codes are mapped as the service documents them: FAILED_PRECONDITION
// (a version not ENABLED) is anchor.ErrDisabled, ErrPendingDeletion or
// ErrDestroyed by the state the service names (ErrKeyUnusable for any
// other state); NOT_FOUND is ErrKeyNotFound; PERMISSION_DENIED is
// ErrAccessDenied; INVALID_ARGUMENT on Decrypt is ErrInvalidCiphertext
// (tampered, truncated, another key or another Context), on Encrypt
// ErrKeyUnusable (the key cannot encrypt, e.g. another purpose).
// UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, INTERNAL, and every
// error without a status (dialling, a done context) are transient, and so
// is UNAUTHENTICATED: it concerns Krypton's own credentials, not the
// customer's decision, which Cloud KMS reports as PERMISSION_DENIED.
//
// # Credentials and IAM
//
// Krypton authenticates with Application Default Credentials: on GKE,
// workload identity (the Kubernetes service account bound to a Google
// service account); on Compute Engine, the instance's service account;
// elsewhere GOOGLE_APPLICATION_CREDENTIALS. The customer grants that
// service account roles/cloudkms.cryptoKeyEncrypterDecrypter on the crypto
// key (not the key ring or project), which holds exactly
// cloudkms.cryptoKeyVersions.useToEncrypt and useToDecrypt. Nothing else
// is needed: Check is an encrypt and decrypt round trip (anchor.Probe),
// not GetCryptoKey, which would need cloudkms.cryptoKeys.get (for example
// roles/cloudkms.viewer) and would lock out a customer who granted exactly
// the role above.
//
// # Options
//
// anchor.Options.Provider["gcpkms"] takes an Options (or *Options):
// Endpoint (host:port, overriding the URI's endpoint and Google's),
// ClientOptions passed to the client after the endpoint (credentials,
// TLS roots through option.WithGRPCDialOption with
// grpc.WithTransportCredentials, and for tests option.WithoutAuthentication),
// and CallTimeout. gcpkmstest.Server.ClientOptions returns those for the
// test fake, which speaks gRPC over TLS with a throw-away CA.
//
// # The kill switch
//
// Disabling the primary version (or scheduling its destruction, or
// revoking the IAM grant) makes Encrypt fail, so Check, which seals first,
// is denied at once: ErrDisabled, ErrPendingDeletion (DESTROY_SCHEDULED,
// which the customer can still restore, as DISABLED, for the scheduled
// period, 30 days by default) or ErrDestroyed, and the region locks the
// tenant out. Blobs sealed under older versions keep opening for as long
// as those versions are ENABLED, even with the primary disabled; the
// kill switch still holds, because the region acts on Check. Disabling or
// destroying only an older version leaves Check passing (the primary
// works) but denies Unseal of the blobs sealed under it. To revoke
// Krypton completely, disable every version, or remove the IAM binding.
// A DESTROYED version is gone: nothing sealed under it opens again.
package gcpkms
