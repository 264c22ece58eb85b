package gcpkms

import (
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"log/slog"
	"sync/atomic"
	"time"

	kms "cloud.google.com/go/kms/apiv1"
	"cloud.google.com/go/kms/apiv1/kmspb"
	"google.golang.org/api/option"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/kryptonkms/krypton/anchor"
)

func init() { anchor.Register(anchor.SchemeGCPKMS, open) }

// Options are the gcpkms options, passed to anchor.Open as
// anchor.Options.Provider["gcpkms"] (a value or a pointer).
type Options struct {
	// Endpoint is the gRPC endpoint, host:port. It overrides the URI's
	// endpoint parameter; empty means the URI's, or else Google's
	// (cloudkms.googleapis.com:443).
	Endpoint string

	// ClientOptions are passed to the Cloud KMS client after the endpoint,
	// so they can override it: credentials (option.WithCredentialsFile,
	// option.WithTokenSource), TLS (option.WithGRPCDialOption with
	// grpc.WithTransportCredentials) or, for tests against a fake,
	// option.WithoutAuthentication. Empty means Application Default
	// Credentials over TLS.
	ClientOptions []option.ClientOption

	// CallTimeout bounds each Encrypt and Decrypt call when the caller's
	// context has no earlier deadline; 0 means DefaultCallTimeout.
	CallTimeout time.Duration
}

// DefaultCallTimeout bounds one Cloud KMS call when Options.CallTimeout
// is zero. Encrypt and Decrypt answer in tens of milliseconds; a call
// that has not answered in 10 s is reported as transient and retried by
// the caller (anchor.Retry), not by the client library.
const DefaultCallTimeout = 10 * time.Second

// Provider is an anchor.Provider on a Cloud KMS symmetric crypto key.
type Provider struct {
	name    string // projects/P/locations/L/keyRings/R/cryptoKeys/K
	desc    anchor.Description
	timeout time.Duration
	log     *slog.Logger
	client  *kms.KeyManagementClient
	closed  atomic.Bool
}

var _ anchor.Provider = (*Provider)(nil)

func open(ctx context.Context, u anchor.URI, opts anchor.Options) (anchor.Provider, error) {
	gu, ok := u.(*anchor.GCPKMSURI)
	if !ok {
		return nil, fmt.Errorf("gcpkms: not a gcpkms URI: %s", u.Scheme())
	}
	o, err := anchor.ProviderOptions[Options](opts, anchor.SchemeGCPKMS)
	if err != nil {
		return nil, err
	}
	return Open(ctx, gu, o, opts.Log())
}

// Open makes a Cloud KMS client for the key u names. It does not call
// Cloud KMS (the gRPC connection is made on first use): Check does.
//
// Errors: those of the client library when it cannot be set up (no
// Application Default Credentials, a bad option), which are neither
// denied nor transient: a configuration mistake.
func Open(ctx context.Context, u *anchor.GCPKMSURI, o Options, log *slog.Logger) (*Provider, error) {
	if log == nil {
		log = slog.Default()
	}
	var copts []option.ClientOption
	switch {
	case o.Endpoint != "":
		copts = append(copts, option.WithEndpoint(o.Endpoint))
	case u.Endpoint != "":
		copts = append(copts, option.WithEndpoint(u.Endpoint))
	}
	copts = append(copts, o.ClientOptions...)
	c, err := kms.NewKeyManagementClient(ctx, copts...)
	if err != nil {
		return nil, fmt.Errorf("gcpkms: create client: %w", err)
	}
	// No retries inside the library: its defaults retry UNAVAILABLE and
	// DEADLINE_EXCEEDED for up to 60 s, which would hide an outage from
	// Check and double the backoff of anchor.Retry. Callers retry
	// transient errors themselves.
	c.CallOptions = &kms.KeyManagementCallOptions{}
	timeout := o.CallTimeout
	if timeout <= 0 {
		timeout = DefaultCallTimeout
	}
	p := &Provider{
		name:    u.Name(),
		desc:    anchor.Description{Scheme: anchor.SchemeGCPKMS, Key: u.Name(), URI: u.String()},
		timeout: timeout,
		log:     log.With("anchor", anchor.SchemeGCPKMS, "key", u.Name()),
		client:  c,
	}
	p.log.Debug("opened", "op", "open")
	return p, nil
}

// castagnoli is the CRC32C table Cloud KMS's checksums use.
var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func crc32c(b []byte) *wrapperspb.Int64Value {
	return wrapperspb.Int64(int64(crc32.Checksum(b, castagnoli)))
}

// errIntegrity is wrapped in the transient error returned when a
// response's checksums do not match: Google's guidance is to retry a
// limited number of times, which anchor.Retry does.
var errIntegrity = errors.New("gcpkms: response failed its CRC32C integrity check")

func (p *Provider) callContext(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, p.timeout)
}

// Seal implements anchor.Provider: Encrypt under the key's primary
// version, with ac.AAD() as additional authenticated data. The blob is
// Cloud KMS's ciphertext as it is, which names the version it was made
// with.
func (p *Provider) Seal(ctx context.Context, plaintext []byte, ac anchor.Context) ([]byte, error) {
	if p.closed.Load() {
		return nil, anchor.ErrClosed
	}
	if err := anchor.CheckSeal(plaintext, ac); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, anchor.Transient("seal", anchor.SchemeGCPKMS, err)
	}
	aad := ac.AAD()
	cctx, cancel := p.callContext(ctx)
	defer cancel()
	resp, err := p.client.Encrypt(cctx, &kmspb.EncryptRequest{
		Name:                              p.name,
		Plaintext:                         plaintext,
		PlaintextCrc32C:                   crc32c(plaintext),
		AdditionalAuthenticatedData:       aad,
		AdditionalAuthenticatedDataCrc32C: crc32c(aad),
	})
	if err != nil {
		return nil, classify(ctx, "seal", err)
	}
	switch {
	case !resp.GetVerifiedPlaintextCrc32C():
		return nil, anchor.Transient("seal", anchor.SchemeGCPKMS, fmt.Errorf("%w: plaintext not verified by the service", errIntegrity))
	case !resp.GetVerifiedAdditionalAuthenticatedDataCrc32C():
		return nil, anchor.Transient("seal", anchor.SchemeGCPKMS, fmt.Errorf("%w: additional authenticated data not verified by the service", errIntegrity))
	case resp.GetCiphertextCrc32C() == nil || resp.GetCiphertextCrc32C().GetValue() != crc32c(resp.GetCiphertext()).GetValue():
		return nil, anchor.Transient("seal", anchor.SchemeGCPKMS, fmt.Errorf("%w: ciphertext checksum mismatch", errIntegrity))
	case len(resp.GetCiphertext()) == 0 || len(resp.GetCiphertext()) > anchor.MaxSealedSize:
		return nil, anchor.Transient("seal", anchor.SchemeGCPKMS, fmt.Errorf("gcpkms: service returned a %d-byte ciphertext", len(resp.GetCiphertext())))
	}
	return resp.GetCiphertext(), nil
}

// Unseal implements anchor.Provider: Decrypt with ac.AAD(). Cloud KMS
// finds the version from the ciphertext, so blobs sealed under older
// versions open for as long as those versions are ENABLED.
func (p *Provider) Unseal(ctx context.Context, sealed []byte, ac anchor.Context) ([]byte, error) {
	if p.closed.Load() {
		return nil, anchor.ErrClosed
	}
	if err := anchor.CheckUnseal(anchor.SchemeGCPKMS, sealed, ac); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, anchor.Transient("unseal", anchor.SchemeGCPKMS, err)
	}
	aad := ac.AAD()
	cctx, cancel := p.callContext(ctx)
	defer cancel()
	resp, err := p.client.Decrypt(cctx, &kmspb.DecryptRequest{
		Name:                              p.name,
		Ciphertext:                        sealed,
		CiphertextCrc32C:                  crc32c(sealed),
		AdditionalAuthenticatedData:       aad,
		AdditionalAuthenticatedDataCrc32C: crc32c(aad),
	})
	if err != nil {
		return nil, classify(ctx, "unseal", err)
	}
	pt := resp.GetPlaintext()
	if resp.GetPlaintextCrc32C() == nil || resp.GetPlaintextCrc32C().GetValue() != crc32c(pt).GetValue() {
		clear(pt)
		return nil, anchor.Transient("unseal", anchor.SchemeGCPKMS, fmt.Errorf("%w: plaintext checksum mismatch", errIntegrity))
	}
	if len(pt) == 0 || len(pt) > anchor.MaxPlaintextSize {
		// Decrypt succeeded under our key and Context, so this is a blob
		// sealed by someone else with the same key and AAD: not ours.
		clear(pt)
		return nil, anchor.Deny("unseal", anchor.SchemeGCPKMS, anchor.ReasonInvalidCiphertext,
			fmt.Errorf("gcpkms: decrypted %d bytes, not a sealed anchor key", len(pt)))
	}
	return pt, nil
}

// Check implements anchor.Provider with anchor.Probe: one Encrypt and one
// Decrypt of random bytes. It needs exactly the permissions Seal and
// Unseal need (roles/cloudkms.cryptoKeyEncrypterDecrypter), unlike
// GetCryptoKey, which needs cloudkms.cryptoKeys.get: a customer whose
// grant allows exactly Encrypt and Decrypt is not locked out by Check.
// It tests the primary version: see the package doc for what disabling
// an older version does.
func (p *Provider) Check(ctx context.Context) error {
	if p.closed.Load() {
		return anchor.ErrClosed
	}
	err := anchor.Probe(ctx, p)
	if err != nil && !errors.Is(err, anchor.ErrClosed) {
		p.log.Debug("check failed", "op", "check", "err", err)
	}
	return err
}

// Describe implements anchor.Provider.
func (p *Provider) Describe() anchor.Description { return p.desc }

// Close implements anchor.Provider: it closes the gRPC connection. Calls
// after the first return nil.
func (p *Provider) Close() error {
	if p.closed.Swap(true) {
		return nil
	}
	if err := p.client.Close(); err != nil {
		p.log.Debug("close", "op", "close", "err", err)
	}
	return nil
}
