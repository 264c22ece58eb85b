// Package azurekv is the Azure Key Vault and Managed HSM anchor: the
// customer's root key (L1) is a key in their vault, and Krypton asks the
// vault to wrap and unwrap tenant keys (L2) with it. The key never leaves
// the vault.
//
// Importing the package registers the "azurekv" scheme with anchor.Open:
//
//	import _ "github.com/kryptonkms/krypton/anchor/azurekv"
//
//	p, err := anchor.Open(ctx, "azurekv://contoso.vault.azure.net/keys/krypton-root", anchor.Options{Logger: log})
//
// # URI
//
//	azurekv://<vault-host>/keys/<name>[/<version>]
//
// vault-host is a Key Vault (contoso.vault.azure.net) or a Managed HSM
// (contoso.managedhsm.azure.net). Without a version, Seal wraps with the
// key's current version; every sealed blob records the version that wrapped
// it, and Unseal asks for that version, so rotating the key in the vault
// (a new version) leaves old blobs readable while new ones use the new
// version. With a version, Seal always uses that version.
//
// # Algorithms
//
// RSA and RSA-HSM keys (Key Vault, or Managed HSM) wrap with RSA-OAEP-256;
// oct-HSM keys (Managed HSM) with A256KW (AES key wrap, RFC 3394). Open
// reads the key to learn its type; Options.Algorithm may force one.
//
// wrapkey takes no additional authenticated data, so the blob is bound to
// its anchor.Context by what is wrapped: a 16-byte random nonce,
// SHA-256(Context.AAD()), the plaintext's length and the plaintext padded
// to 64 bytes (120 bytes in all). Unseal compares the digest in constant
// time and refuses a mismatch as anchor.ErrInvalidCiphertext. The nonce
// makes A256KW, which is deterministic, give a new blob on every Seal.
//
// RSA-OAEP is public-key encryption: whoever holds the public key (any
// principal with keys/read on the vault) can make a blob that Unseal
// accepts, for a Context and plaintext of their choosing. The blob proves
// nothing about who sealed it; sealed blobs get their integrity from
// where Krypton stores them (the region's replicated log), as with every
// anchor. A256KW keys have no such public half.
//
// # Credentials and options
//
// Options go in anchor.Options.Provider["azurekv"] as an Options (or
// *Options). Without a Credential, Open uses azidentity's
// DefaultAzureCredential chain: environment (AZURE_TENANT_ID,
// AZURE_CLIENT_ID with AZURE_CLIENT_SECRET or AZURE_CLIENT_CERTIFICATE_PATH),
// workload identity (AKS federated tokens), managed identity, then the
// Azure CLI and azd sign-ins of a developer machine. Any
// azcore.TokenCredential may be passed instead. The client learns the
// tenant and the token scope from the vault's 401 challenge
// (https://vault.azure.net/.default or https://managedhsm.azure.net/.default)
// and refuses a challenge for a resource that does not match the vault's
// domain. Options.Client sets the HTTP transport and the SDK's retry policy
// (anchor.Retry is the retry that matters for the kill switch: it never
// retries a denial; the SDK's own retries apply to 408, 429 and 5xx only).
//
// # What to grant
//
// On the key (or the vault), the role "Key Vault Crypto Service Encryption
// User" (Azure RBAC; on a Managed HSM, its local RBAC role of that name):
// keys/read (Open reads the key's type and enabled attribute once),
// keys/wrapKey and keys/unwrapKey. With vault access policies instead of
// RBAC: key permissions get, wrapKey, unwrapKey. Nothing else: Krypton
// never creates, rotates, deletes or exports the key.
//
// Seal wraps and then unwraps once to check the result, because Key Vault
// wraps with a disabled RSA key (wrapping is a public-key operation and is
// allowed) and a Seal that returned a blob the key cannot open would lose a
// tenant key. Check is a round trip (wrapkey and unwrapkey of a probe under
// anchor.ProbeContext), so it needs exactly the permissions Seal and Unseal
// need, and a customer who removes the role assignment sees tenants locked
// out as surely as one who disables the key.
//
// # The kill switch
//
// How the customer's actions in Azure reach Krypton:
//
//   - Disabling the key (or the version in use): unwrapkey answers 403
//     Forbidden with inner code KeyDisabled, so Seal, Unseal and Check
//     return anchor.ErrDisabled. Enabling it again restores service; no
//     blob is lost.
//   - Deleting the key: vaults keep it soft-deleted for the retention
//     period (7 to 90 days) and every operation answers 404 KeyNotFound,
//     reported as anchor.ErrPendingDeletion. Recovering the key restores
//     service. After the retention period, or a purge, the key and every
//     blob sealed under it are gone for good; Key Vault answers the same
//     404, so Krypton keeps saying ErrPendingDeletion (telling them apart
//     needs permissions on deleted keys that Krypton is not granted). With
//     purge protection on the vault, which Krypton's setup guide asks for,
//     nobody can purge before the retention period ends: a deletion, by
//     mistake or by an intruder, is recoverable.
//   - Removing Krypton's role assignment, or a firewall rule that shuts
//     Krypton out: 403 (ForbiddenByRbac, ForbiddenByPolicy,
//     ForbiddenByFirewall), anchor.ErrAccessDenied.
//   - An expired key or one not yet valid (exp, nbf): anchor.ErrKeyUnusable.
//
// Throttling (429), timeouts, 5xx, network and credential failures are
// transient (anchor.ErrUnavailable): the key said nothing. Errors are
// *anchor.DeniedError or *anchor.TransientError wrapping an *APIError
// (status and Key Vault error codes) that wraps the *azcore.ResponseError.
// No error, log or Description shows key bytes, tokens or credentials.
package azurekv
