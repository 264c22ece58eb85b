// Package awskms is the AWS KMS anchor: the customer's L1 root key is a
// symmetric KMS key (SYMMETRIC_DEFAULT, usage ENCRYPT_DECRYPT) in the
// customer's account, and Krypton asks KMS to Encrypt and Decrypt 32-byte
// tenant keys (L2) under it.
//
//	import _ "github.com/kryptonkms/krypton/anchor/awskms"
//
//	p, err := anchor.Open(ctx, "awskms://arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab", anchor.Options{})
//
// # URI
//
//	awskms://<key>[?region=R][&endpoint=URL]
//
// <key> is a key ARN, an alias ARN (arn:aws:kms:R:ACCOUNT:alias/NAME),
// alias/NAME, or a key id (a UUID or an mrk- multi-Region id). Prefer the
// key ARN: it names the account and region, and a moved alias can not
// redirect Krypton. Region defaults to the ARN's; with alias/NAME or a key
// id give ?region= (or Options.Region, or AWS_REGION). endpoint overrides
// the service endpoint (a VPC interface endpoint, a FIPS endpoint,
// local-kms in tests); it must be https:// (the tenant key is sent to it),
// http:// only to a loopback host with anchor.Options.Development
// (anchor.CheckTransport). AWS managed keys (alias/aws/...) are refused.
//
// # What is sent
//
// Seal is Encrypt with EncryptionContext = anchor.Context.Map()
// ({"krypton-purpose": "tenant-key", "krypton-region": R,
// "krypton-tenant": T, "krypton-l2-version": V}): CloudTrail logs it, so a
// customer sees which region, tenant and L2 version each call was for, and
// can write key policy conditions on it (kms:EncryptionContext:krypton-region).
// Unseal is Decrypt with the same context and KeyId set to the URI's key,
// so that a blob made under any other key is refused (IncorrectKeyException)
// instead of being opened with whatever key it names.
// Check is anchor.Probe: an Encrypt and a Decrypt of 32 random bytes under
// anchor.ProbeContext. kms:DescribeKey would tell the key state in one call
// but is a permission of its own; a customer who grants exactly Encrypt and
// Decrypt must not be locked out by Check.
//
// # Credentials
//
// The SDK's default chain (config.LoadDefaultConfig): environment
// (AWS_ACCESS_KEY_ID, ...), the shared profile (AWS_PROFILE), web identity
// (EKS IRSA, AWS_WEB_IDENTITY_TOKEN_FILE + AWS_ROLE_ARN), container and
// instance roles. For cross-account keys, assume a role in the customer's
// account through the profile (role_arn, source_profile) or pass
// Options.Credentials. Options go in anchor.Options.Provider["awskms"] as
// an awskms.Options. Credentials never appear in Describe, logs or errors.
//
// # Permissions to grant
//
// On the key (key policy, or IAM policy where the key policy delegates to
// IAM), for Krypton's role:
//
//	{"Effect": "Allow",
//	 "Principal": {"AWS": "arn:aws:iam::KRYPTON_ACCOUNT:role/krypton-region"},
//	 "Action": ["kms:Encrypt", "kms:Decrypt"],
//	 "Resource": "*",
//	 "Condition": {"StringEquals": {"kms:EncryptionContext:krypton-purpose": "tenant-key"}}}
//
// Nothing else: no kms:DescribeKey, no kms:GenerateDataKey, no grants.
// A condition on krypton-region can also pin a key to one Krypton region
// (the probe uses region "krypton-probe": allow it too).
//
// # Kill switch
//
// Every KMS answer is classified, by its error code as the KMS API
// reference documents it:
//
//   - DisabledException (DisableKey) → anchor.ErrDisabled;
//   - KMSInvalidStateException → anchor.ErrPendingDeletion (ScheduleKeyDeletion;
//     KMS gives the same code for a key in PendingImport or an unavailable
//     custom key store, which are also the customer's doing);
//   - NotFoundException, InvalidArnException → anchor.ErrKeyNotFound;
//   - AccessDeniedException (key policy or IAM revoked), UnrecognizedClientException
//     (access key deleted) → anchor.ErrAccessDenied;
//   - InvalidCiphertextException, IncorrectKeyException → anchor.ErrInvalidCiphertext;
//   - InvalidKeyUsageException, UnsupportedOperationException → anchor.ErrKeyUnusable;
//   - KeyUnavailableException, DependencyTimeoutException, KMSInternalException,
//     ThrottlingException, LimitExceededException, ExpiredTokenException,
//     InvalidSignatureException (clock skew), any 5xx or 429, connection
//     errors, timeouts and a done context → *anchor.TransientError.
//
// So DisableKey, ScheduleKeyDeletion or removing Krypton from the key
// policy make the next Check return a denial, and the region leader locks
// the tenants on the key out; CancelKeyDeletion + EnableKey or restoring
// the policy undo it. IAM and key policy changes reach KMS within seconds
// to a few minutes (eventual consistency), so the kill switch takes as
// long. After the pending-deletion window (7 to 30 days) the key and every
// blob sealed under it are gone for good.
//
// The SDK's own retries are off; each call retries transient failures
// with Options.Retry (DefaultRetryPolicy: three attempts within about
// 150 ms) and never retries a denial.
//
// local-kms, the emulator the tests run in-process, answers
// AccessDeniedException where AWS answers DisabledException or
// KMSInvalidStateException to Decrypt; both are denials, so the kill
// switch acts the same, only the reason differs.
package awskms
