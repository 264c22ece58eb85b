package azurekv

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync/atomic"

	"github.com/Azure/azure-sdk-for-go/sdk/azcore"
	"github.com/Azure/azure-sdk-for-go/sdk/azidentity"
	"github.com/Azure/azure-sdk-for-go/sdk/security/keyvault/azkeys"

	"github.com/kryptonkms/krypton/anchor"
)

func init() { anchor.Register(anchor.SchemeAzureKV, open) }

// Options are the azurekv options, passed as
// anchor.Options.Provider["azurekv"] (an Options or a *Options). The zero
// value is the production setting.
type Options struct {
	// Credential gets Krypton's Microsoft Entra tokens for the vault. nil
	// means azidentity.NewDefaultAzureCredential: environment variables
	// (AZURE_TENANT_ID, AZURE_CLIENT_ID, AZURE_CLIENT_SECRET or
	// AZURE_CLIENT_CERTIFICATE_PATH), workload identity (AKS), managed
	// identity, then the developer tools' sign-ins (Azure CLI, azd).
	// Any azcore.TokenCredential works: the client asks it for the scope
	// the vault's 401 challenge names (https://vault.azure.net/.default or
	// https://managedhsm.azure.net/.default) in the tenant it names.
	Credential azcore.TokenCredential

	// Client configures the azkeys client: its HTTP transport, retry
	// policy (the SDK default is 3 retries of 429, 408 and 5xx with
	// exponential backoff from 800 ms, honouring Retry-After up to
	// MaxRetryDelay), logging and telemetry. The zero value is the SDK's
	// default. Keep DisableChallengeResourceVerification false in
	// production: it is what refuses a challenge that sends Krypton's
	// token to a host that is not Key Vault.
	Client azkeys.ClientOptions

	// Algorithm forces the wrap algorithm: "RSA-OAEP-256" (Key Vault RSA
	// or RSA-HSM keys) or "A256KW" (Managed HSM oct-HSM keys). Empty
	// means: chosen from the key's type, read at Open.
	Algorithm azkeys.EncryptionAlgorithm
}

// Provider is an anchor.Provider on an Azure Key Vault or Managed HSM key.
// It is safe for concurrent use.
type Provider struct {
	client  *azkeys.Client
	name    string // key name
	version string // version from the URI, "" for the key's current one
	alg     azkeys.EncryptionAlgorithm
	desc    anchor.Description
	log     *slog.Logger
	closed  atomic.Bool
}

var _ anchor.Provider = (*Provider)(nil)

func open(ctx context.Context, u anchor.URI, opts anchor.Options) (anchor.Provider, error) {
	au, ok := u.(*anchor.AzureKVURI)
	if !ok {
		return nil, fmt.Errorf("azurekv: not an azurekv URI: %s", u.Scheme())
	}
	return Open(ctx, au, opts)
}

// Open returns a Provider on the key u names. It reads the key (GET, the
// keys/read permission) to learn its type, and so the wrap algorithm,
// unless Options.Algorithm is set, and to fail early on a key that does not
// exist, is disabled, or cannot wrap.
//
// Errors: a *anchor.DeniedError (ReasonKeyNotFound, ReasonDisabled,
// ReasonAccessDenied, ReasonKeyUnusable for a key type or key_ops that
// cannot wrap), a *anchor.TransientError, or an error for bad Options or
// a credential that cannot be built.
func Open(ctx context.Context, u *anchor.AzureKVURI, opts anchor.Options) (*Provider, error) {
	o, err := anchor.ProviderOptions[Options](opts, anchor.SchemeAzureKV)
	if err != nil {
		return nil, err
	}
	cred := o.Credential
	if cred == nil {
		cred, err = azidentity.NewDefaultAzureCredential(nil)
		if err != nil {
			return nil, fmt.Errorf("azurekv: default Azure credential: %w", err)
		}
	}
	client, err := azkeys.NewClient(u.VaultURL(), cred, &o.Client)
	if err != nil {
		return nil, fmt.Errorf("azurekv: %w", err)
	}
	p := &Provider{
		client:  client,
		name:    u.Name,
		version: u.Version,
		alg:     o.Algorithm,
		desc:    anchor.Description{Scheme: anchor.SchemeAzureKV, Key: u.KeyName(), URI: u.String()},
	}
	if p.alg != "" && algByte(p.alg) == 0 {
		return nil, fmt.Errorf("azurekv: Options.Algorithm %q is not RSA-OAEP-256 or A256KW", p.alg)
	}
	if err := ctx.Err(); err != nil {
		return nil, anchor.Transient("open", anchor.SchemeAzureKV, err)
	}
	resp, err := client.GetKey(ctx, u.Name, u.Version, nil)
	if err != nil {
		return nil, classify("open", "get", err, anchor.ReasonKeyNotFound)
	}
	if err := p.usable(resp.KeyBundle); err != nil {
		return nil, err
	}
	p.log = opts.Log().With("anchor", anchor.SchemeAzureKV, "key", u.KeyName(), "algorithm", string(p.alg))
	p.log.Info("azurekv anchor open")
	return p, nil
}

// usable checks the key bundle read at Open and picks the algorithm.
func (p *Provider) usable(kb azkeys.KeyBundle) error {
	unusable := func(msg string) error {
		return anchor.Deny("open", anchor.SchemeAzureKV, anchor.ReasonKeyUnusable, errors.New("azurekv: "+msg))
	}
	if kb.Key == nil || kb.Key.Kty == nil {
		return unusable("the vault returned no key type")
	}
	if kb.Attributes != nil && kb.Attributes.Enabled != nil && !*kb.Attributes.Enabled {
		return anchor.Deny("open", anchor.SchemeAzureKV, anchor.ReasonDisabled, errors.New("azurekv: key is disabled"))
	}
	var want azkeys.EncryptionAlgorithm
	switch *kb.Key.Kty {
	case azkeys.KeyTypeRSA, azkeys.KeyTypeRSAHSM:
		want = azkeys.EncryptionAlgorithmRSAOAEP256
	case azkeys.KeyTypeOct, azkeys.KeyTypeOctHSM:
		want = azkeys.EncryptionAlgorithmA256KW
	default:
		return unusable(fmt.Sprintf("key type %s cannot wrap; want RSA, RSA-HSM or oct-HSM", *kb.Key.Kty))
	}
	if p.alg == "" {
		p.alg = want
	} else if p.alg != want {
		return unusable(fmt.Sprintf("algorithm %s does not fit key type %s", p.alg, *kb.Key.Kty))
	}
	if len(kb.Key.KeyOps) > 0 {
		for _, op := range []azkeys.KeyOperation{azkeys.KeyOperationWrapKey, azkeys.KeyOperationUnwrapKey} {
			if !slices.ContainsFunc(kb.Key.KeyOps, func(k *azkeys.KeyOperation) bool { return k != nil && *k == op }) {
				return unusable(fmt.Sprintf("key_ops lacks %s", op))
			}
		}
	}
	return nil
}

// begin is the common start of every call after argument checks.
func (p *Provider) begin(ctx context.Context, op string) error {
	if p.closed.Load() {
		return anchor.ErrClosed
	}
	if err := ctx.Err(); err != nil {
		return anchor.Transient(op, anchor.SchemeAzureKV, err)
	}
	return nil
}

// wrap wraps payload with the configured version (the current one if the
// URI names none) and returns the blob naming the version Key Vault used.
func (p *Provider) wrap(ctx context.Context, op string, payload []byte) (blob, error) {
	alg := p.alg
	resp, err := p.client.WrapKey(ctx, p.name, p.version, azkeys.KeyOperationParameters{Algorithm: &alg, Value: payload}, nil)
	if err != nil {
		return blob{}, classify(op, "wrapkey", err, anchor.ReasonPendingDeletion)
	}
	var version string
	if resp.KID != nil {
		version = resp.KID.Version()
	}
	if !validVersion(version) {
		return blob{}, anchor.Transient(op, anchor.SchemeAzureKV, errors.New("azurekv: wrapkey answer names no key version"))
	}
	if len(resp.Result) == 0 || len(resp.Result) > maxWrappedSize {
		return blob{}, anchor.Transient(op, anchor.SchemeAzureKV, fmt.Errorf("azurekv: wrapkey returned %d bytes", len(resp.Result)))
	}
	return blob{alg: p.alg, version: version, wrapped: resp.Result}, nil
}

// unwrap returns the payload of b. The caller clears it.
func (p *Provider) unwrap(ctx context.Context, op string, b blob) ([]byte, error) {
	alg := b.alg
	resp, err := p.client.UnwrapKey(ctx, p.name, b.version, azkeys.KeyOperationParameters{Algorithm: &alg, Value: b.wrapped}, nil)
	if err == nil {
		return resp.Result, nil
	}
	err = classify(op, "unwrapkey", err, anchor.ReasonPendingDeletion)
	if r, _ := anchor.Reason(err); r == anchor.ReasonPendingDeletion && op == "unseal" && b.version != p.version {
		// 404 for a version the blob names: either the key is gone, or the
		// blob names a version this key never had (another key's blob, a
		// changed header). Reading the key tells which.
		if _, gerr := p.client.GetKey(ctx, p.name, p.version, nil); gerr == nil {
			return nil, anchor.Deny(op, anchor.SchemeAzureKV, anchor.ReasonInvalidCiphertext,
				errors.New("azurekv: sealed blob names a version this key does not have"))
		} else if gerr := classify(op, "get", gerr, anchor.ReasonPendingDeletion); anchor.IsTransient(gerr) {
			return nil, gerr
		}
	}
	return nil, err
}

// Seal implements anchor.Provider. It wraps with the key's current
// version (or the URI's) and then unwraps the result once and compares:
// Key Vault wraps with a disabled RSA key (a public-key operation), and a
// Seal that returned a blob its key cannot open would lose the tenant
// key. The check also exercises the unwrapKey permission.
func (p *Provider) Seal(ctx context.Context, plaintext []byte, ac anchor.Context) ([]byte, error) {
	if p.closed.Load() {
		return nil, anchor.ErrClosed
	}
	if err := anchor.CheckSeal(plaintext, ac); err != nil {
		return nil, err
	}
	if err := p.begin(ctx, "seal"); err != nil {
		return nil, err
	}
	return p.seal(ctx, "seal", plaintext, ac, true)
}

func (p *Provider) seal(ctx context.Context, op string, plaintext []byte, ac anchor.Context, verify bool) ([]byte, error) {
	payload, err := newPayload(plaintext, ac)
	if err != nil {
		return nil, anchor.Transient(op, anchor.SchemeAzureKV, err)
	}
	defer clear(payload)
	b, err := p.wrap(ctx, op, payload)
	if err != nil {
		return nil, err
	}
	if verify {
		got, err := p.unwrap(ctx, op, b)
		defer clear(got)
		if err != nil {
			return nil, err
		}
		if subtle.ConstantTimeCompare(got, payload) != 1 {
			return nil, anchor.Deny(op, anchor.SchemeAzureKV, anchor.ReasonKeyUnusable,
				errors.New("azurekv: the vault unwrapped other bytes than it wrapped"))
		}
	}
	return b.marshal(), nil
}

// Unseal implements anchor.Provider.
func (p *Provider) Unseal(ctx context.Context, sealed []byte, ac anchor.Context) ([]byte, error) {
	if p.closed.Load() {
		return nil, anchor.ErrClosed
	}
	if err := anchor.CheckUnseal(anchor.SchemeAzureKV, sealed, ac); err != nil {
		return nil, err
	}
	if err := p.begin(ctx, "unseal"); err != nil {
		return nil, err
	}
	return p.unseal(ctx, "unseal", sealed, ac)
}

func (p *Provider) unseal(ctx context.Context, op string, sealed []byte, ac anchor.Context) ([]byte, error) {
	b, err := parseBlob(sealed)
	if err != nil {
		return nil, anchor.Deny(op, anchor.SchemeAzureKV, anchor.ReasonInvalidCiphertext, err)
	}
	payload, err := p.unwrap(ctx, op, b)
	if err != nil {
		return nil, err
	}
	defer clear(payload)
	pt, err := openPayload(payload, ac)
	if err != nil {
		return nil, anchor.Deny(op, anchor.SchemeAzureKV, anchor.ReasonInvalidCiphertext, err)
	}
	return pt, nil
}

// Check implements anchor.Provider with a round trip (as anchor.Probe,
// without Seal's extra unwrap): wrapkey and unwrapkey of 32 random bytes
// under anchor.ProbeContext. It needs exactly the permissions Seal and
// Unseal need, and answers as they do: ErrDisabled (unwrapkey 403
// KeyDisabled), ErrPendingDeletion (404 once open), ErrAccessDenied (the
// role assignment removed), transient for throttling and outages.
func (p *Provider) Check(ctx context.Context) error {
	if err := p.begin(ctx, "check"); err != nil {
		return err
	}
	var pt [32]byte
	rand.Read(pt[:])
	defer clear(pt[:])
	sealed, err := p.seal(ctx, "check", pt[:], anchor.ProbeContext, false)
	if err != nil {
		return err
	}
	got, err := p.unseal(ctx, "check", sealed, anchor.ProbeContext)
	defer clear(got)
	if err != nil {
		return err
	}
	if subtle.ConstantTimeCompare(got, pt[:]) != 1 {
		return anchor.Deny("check", anchor.SchemeAzureKV, anchor.ReasonKeyUnusable,
			errors.New("azurekv: probe round trip returned other bytes"))
	}
	return nil
}

// Describe implements anchor.Provider. Key is "vault-host/keys/name[/version]".
func (p *Provider) Describe() anchor.Description { return p.desc }

// Close implements anchor.Provider. The azkeys client holds no resources
// of its own (connections belong to its HTTP transport), so Close only
// makes later calls return anchor.ErrClosed.
func (p *Provider) Close() error {
	p.closed.Store(true)
	return nil
}
