package awskms

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	awshttp "github.com/aws/aws-sdk-go-v2/aws/transport/http"
	"github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/kms"

	"github.com/kryptonkms/krypton/anchor"
)

func init() { anchor.Register(anchor.SchemeAWSKMS, open) }

// MaxCiphertextSize is the largest CiphertextBlob AWS KMS Decrypt accepts.
// Larger blobs are refused as anchor.ErrInvalidCiphertext without a call.
const MaxCiphertextSize = 6144

// Options are the awskms provider's own options, passed as
// anchor.Options.Provider["awskms"] (an Options or a *Options). Every
// field is optional.
type Options struct {
	// Region is used when the URI has neither a region parameter nor a key
	// ARN. Without it, the SDK's usual sources (AWS_REGION, the profile)
	// decide.
	Region string

	// Endpoint overrides the KMS endpoint (a VPC endpoint, local-kms) when
	// the URI has no endpoint parameter.
	Endpoint string

	// Credentials replaces the SDK's default chain (environment, shared
	// profile, web identity/IRSA, container and instance roles), e.g.
	// credentials.NewStaticCredentialsProvider in tests. They never appear
	// in Describe or in an error.
	Credentials aws.CredentialsProvider

	// HTTPClient sends the requests. Nil means a client of this package
	// with Timeout and TLSConfig; its idle connections are closed by Close.
	// A client given here is the caller's to close.
	HTTPClient kms.HTTPClient

	// TLSConfig is the TLS configuration of the default HTTP client (a
	// private CA for a VPC endpoint proxy). Ignored with HTTPClient.
	TLSConfig *tls.Config

	// Timeout bounds each HTTP request of the default client; 0 means
	// DefaultTimeout. Calls are also bounded by their context.
	Timeout time.Duration

	// Retry is how each call retries transient failures (see anchor.Retry).
	// The zero value means DefaultRetryPolicy; Attempts 1 turns retries off.
	// The SDK's own retries are always off, so that a denial is never
	// retried and the policy is the only one.
	Retry anchor.RetryPolicy
}

// DefaultTimeout bounds an HTTP request to KMS when Options.Timeout is 0.
// KMS answers Encrypt and Decrypt in milliseconds; ten seconds covers a
// slow TLS handshake and the SDK's credential refresh.
const DefaultTimeout = 10 * time.Second

// DefaultRetryPolicy is the per-call retry policy: three attempts, about
// 50 ms and 100 ms apart. It rides out a dropped connection or a single
// throttling answer; longer outages are the caller's to retry (the region
// leader wraps calls in anchor.Retry and tolerates a grace period).
func DefaultRetryPolicy() anchor.RetryPolicy {
	return anchor.RetryPolicy{Attempts: 3, Initial: 50 * time.Millisecond, Max: 200 * time.Millisecond}
}

// Provider is an anchor.Provider on one AWS KMS symmetric key.
type Provider struct {
	client *kms.Client
	keyID  string // as in the URI: key ARN, alias ARN, alias/NAME or key id
	retry  anchor.RetryPolicy
	desc   anchor.Description
	log    *slog.Logger
	idle   interface{ CloseIdleConnections() } // our own transport, or nil
	closed atomic.Bool
}

var _ anchor.Provider = (*Provider)(nil)

func open(ctx context.Context, u anchor.URI, opts anchor.Options) (anchor.Provider, error) {
	au, ok := u.(*anchor.AWSKMSURI)
	if !ok {
		return nil, fmt.Errorf("awskms: not an awskms URI: %s", u.Scheme())
	}
	o, err := anchor.ProviderOptions[Options](opts, anchor.SchemeAWSKMS)
	if err != nil {
		return nil, err
	}
	return Open(ctx, au, o, opts.Log())
}

// Open makes a KMS client for the key u names. It does not call KMS (Check
// does): governance and tests can open a provider without the network.
// With no Options.Credentials it loads the SDK's default configuration,
// which may read the shared config files and the environment.
//
// Errors: a missing region, an unreadable shared configuration.
func Open(ctx context.Context, u *anchor.AWSKMSURI, o Options, log *slog.Logger) (*Provider, error) {
	if log == nil {
		log = slog.Default()
	}
	region := u.Region
	if region == "" {
		region = o.Region
	}
	endpoint := u.Endpoint
	if endpoint == "" {
		endpoint = o.Endpoint
	}
	timeout := o.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	p := &Provider{
		keyID: u.Key,
		retry: o.Retry,
		desc:  anchor.Description{Scheme: anchor.SchemeAWSKMS, Key: u.Key, URI: u.String()},
	}
	if p.retry.Attempts == 0 {
		p.retry = DefaultRetryPolicy()
	}
	httpClient := o.HTTPClient
	if httpClient == nil {
		tr := awshttp.NewBuildableClient().GetTransport()
		if o.TLSConfig != nil {
			tr.TLSClientConfig = o.TLSConfig.Clone()
		}
		httpClient = &http.Client{
			Transport: tr,
			Timeout:   timeout,
			// KMS never redirects; following one would send a signed
			// request somewhere else.
			CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
		}
		p.idle = tr
	}
	kopts := func(ko *kms.Options) {
		ko.HTTPClient = httpClient
		ko.Retryer = aws.NopRetryer{}
		ko.RetryMaxAttempts = 1
		if region != "" {
			ko.Region = region
		}
		if endpoint != "" {
			ko.BaseEndpoint = aws.String(endpoint)
		}
	}
	if o.Credentials != nil {
		if region == "" {
			return nil, errors.New("awskms: no region: give ?region= in the URI, a key ARN, or Options.Region")
		}
		p.client = kms.New(kms.Options{Credentials: o.Credentials}, kopts)
	} else {
		var lo []func(*config.LoadOptions) error
		if region != "" {
			lo = append(lo, config.WithRegion(region))
		}
		cfg, err := config.LoadDefaultConfig(ctx, lo...)
		if err != nil {
			return nil, fmt.Errorf("awskms: load AWS configuration: %w", err)
		}
		if cfg.Region == "" {
			return nil, errors.New("awskms: no region: give ?region= in the URI, a key ARN, Options.Region or AWS_REGION")
		}
		region = cfg.Region
		p.client = kms.NewFromConfig(cfg, kopts)
	}
	p.log = log.With("anchor", anchor.SchemeAWSKMS, "key-id", u.Key, "region", region)
	p.log.Debug("awskms anchor opened", "endpoint", endpoint)
	return p, nil
}

// Seal implements anchor.Provider: KMS Encrypt with ac.Map() as the
// encryption context.
func (p *Provider) Seal(ctx context.Context, plaintext []byte, ac anchor.Context) ([]byte, error) {
	if p.closed.Load() {
		return nil, anchor.ErrClosed
	}
	if err := anchor.CheckSeal(plaintext, ac); err != nil {
		return nil, err
	}
	ec := ac.Map()
	return anchor.Retry(ctx, p.retry, func(ctx context.Context) ([]byte, error) {
		if err := ctx.Err(); err != nil {
			return nil, anchor.Transient("seal", anchor.SchemeAWSKMS, err)
		}
		out, err := p.client.Encrypt(ctx, &kms.EncryptInput{
			KeyId:             aws.String(p.keyID),
			Plaintext:         plaintext,
			EncryptionContext: ec,
		})
		if err != nil {
			return nil, classify(ctx, "seal", err)
		}
		if len(out.CiphertextBlob) == 0 {
			return nil, anchor.Transient("seal", anchor.SchemeAWSKMS, errors.New("awskms: Encrypt returned no ciphertext"))
		}
		return out.CiphertextBlob, nil
	})
}

// Unseal implements anchor.Provider: KMS Decrypt with the same encryption
// context and the KeyId pinned, so that a blob sealed under another key is
// refused (IncorrectKeyException) rather than opened with that key.
func (p *Provider) Unseal(ctx context.Context, sealed []byte, ac anchor.Context) ([]byte, error) {
	if p.closed.Load() {
		return nil, anchor.ErrClosed
	}
	if err := anchor.CheckUnseal(anchor.SchemeAWSKMS, sealed, ac); err != nil {
		return nil, err
	}
	if len(sealed) > MaxCiphertextSize {
		return nil, anchor.Deny("unseal", anchor.SchemeAWSKMS, anchor.ReasonInvalidCiphertext,
			fmt.Errorf("awskms: ciphertext longer than %d bytes", MaxCiphertextSize))
	}
	ec := ac.Map()
	return anchor.Retry(ctx, p.retry, func(ctx context.Context) ([]byte, error) {
		if err := ctx.Err(); err != nil {
			return nil, anchor.Transient("unseal", anchor.SchemeAWSKMS, err)
		}
		out, err := p.client.Decrypt(ctx, &kms.DecryptInput{
			KeyId:             aws.String(p.keyID),
			CiphertextBlob:    sealed,
			EncryptionContext: ec,
		})
		if err != nil {
			return nil, classify(ctx, "unseal", err)
		}
		return out.Plaintext, nil
	})
}

// Check implements anchor.Provider with anchor.Probe: an Encrypt and a
// Decrypt of 32 random bytes. It needs exactly the permissions Seal and
// Unseal need; kms:DescribeKey, which would tell the key state without a
// round trip, is a permission of its own that customers need not grant.
func (p *Provider) Check(ctx context.Context) error {
	if p.closed.Load() {
		return anchor.ErrClosed
	}
	err := anchor.Probe(ctx, p)
	if err != nil && !anchor.IsDenied(err) && !anchor.IsTransient(err) && !errors.Is(err, anchor.ErrClosed) {
		// A round trip that returns other bytes: a broken endpoint, not the
		// customer's "no".
		return anchor.Transient("check", anchor.SchemeAWSKMS, fmt.Errorf("awskms: %w", err))
	}
	return err
}

// Describe implements anchor.Provider. It shows the key and the URI
// (region, endpoint), never credentials.
func (p *Provider) Describe() anchor.Description { return p.desc }

// Close implements anchor.Provider: it closes the idle connections of the
// default HTTP client. Calls after Close return anchor.ErrClosed.
func (p *Provider) Close() error {
	if p.closed.Swap(true) {
		return nil
	}
	if p.idle != nil {
		p.idle.CloseIdleConnections()
	}
	return nil
}
