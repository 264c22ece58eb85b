package awskms_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/kms"
	"github.com/aws/aws-sdk-go-v2/service/kms/types"
	"github.com/aws/smithy-go"

	"github.com/kryptonkms/krypton/anchor"
	"github.com/kryptonkms/krypton/anchor/anchortest"
	"github.com/kryptonkms/krypton/anchor/awskms"
	"github.com/kryptonkms/krypton/anchor/awskms/awskmstest"
)

var ac = anchor.Context{Region: "eu-west-1", Tenant: "acme", Version: 3}

func key32() []byte { return bytes.Repeat([]byte{0x5a}, 32) }

// canned answers every request with one KMS error, as AWS puts it on the
// wire (awsJson1_1: status and {"__type": code, "message": ...}).
type canned struct {
	status int
	code   string
	calls  int
}

func (c *canned) RoundTrip(r *http.Request) (*http.Response, error) {
	c.calls++
	if r.Body != nil {
		r.Body.Close()
	}
	body := fmt.Sprintf(`{"__type":"com.amazonaws.kms#%s","message":"refused by test"}`, c.code)
	return &http.Response{
		StatusCode: c.status, Status: http.StatusText(c.status),
		Header:  http.Header{"Content-Type": {"application/x-amz-json-1.1"}, "X-Amzn-Requestid": {"req-1"}},
		Body:    io.NopCloser(strings.NewReader(body)),
		Request: r, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
	}, nil
}

// TestRealErrorCodes sends each error AWS KMS documents for Encrypt and
// Decrypt through the real SDK deserializer, and checks the class.
func TestRealErrorCodes(t *testing.T) {
	const arn = "arn:aws:kms:eu-west-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
	tests := []struct {
		status int
		code   string
		want   error // a sentinel, or anchor.ErrUnavailable for transient
		typed  any   // the kms/types exception errors.As must reach, if any
	}{
		{400, "DisabledException", anchor.ErrDisabled, new(*types.DisabledException)},
		{400, "KMSInvalidStateException", anchor.ErrPendingDeletion, new(*types.KMSInvalidStateException)},
		{400, "NotFoundException", anchor.ErrKeyNotFound, new(*types.NotFoundException)},
		{400, "InvalidArnException", anchor.ErrKeyNotFound, new(*types.InvalidArnException)},
		{400, "AccessDeniedException", anchor.ErrAccessDenied, nil},
		{400, "UnrecognizedClientException", anchor.ErrAccessDenied, nil},
		{400, "InvalidCiphertextException", anchor.ErrInvalidCiphertext, new(*types.InvalidCiphertextException)},
		{400, "IncorrectKeyException", anchor.ErrInvalidCiphertext, new(*types.IncorrectKeyException)},
		{400, "InvalidKeyUsageException", anchor.ErrKeyUnusable, new(*types.InvalidKeyUsageException)},
		{500, "KeyUnavailableException", anchor.ErrUnavailable, new(*types.KeyUnavailableException)},
		{500, "DependencyTimeoutException", anchor.ErrUnavailable, new(*types.DependencyTimeoutException)},
		{500, "KMSInternalException", anchor.ErrUnavailable, new(*types.KMSInternalException)},
		{400, "ThrottlingException", anchor.ErrUnavailable, nil},
		{400, "LimitExceededException", anchor.ErrUnavailable, new(*types.LimitExceededException)},
		{400, "ExpiredTokenException", anchor.ErrUnavailable, nil},
		{400, "InvalidSignatureException", anchor.ErrUnavailable, nil},
		{503, "ServiceUnavailable", anchor.ErrUnavailable, nil},
		{502, "SomethingNew", anchor.ErrUnavailable, nil},
		{429, "SlowDown", anchor.ErrUnavailable, nil},
	}
	for _, tt := range tests {
		t.Run(tt.code, func(t *testing.T) {
			c := &canned{status: tt.status, code: tt.code}
			p := openCanned(t, arn, c)
			_, serr := p.Seal(context.Background(), key32(), ac)
			_, uerr := p.Unseal(context.Background(), []byte("blob-blob-blob"), ac)
			for _, err := range []error{serr, uerr} {
				if !errors.Is(err, tt.want) {
					t.Errorf("got %v, want %v", err, tt.want)
				}
				if tt.want == anchor.ErrUnavailable && (!anchor.IsTransient(err) || anchor.IsDenied(err)) {
					t.Errorf("%v: want transient only", err)
				}
				if tt.want != anchor.ErrUnavailable && !anchor.IsDenied(err) {
					t.Errorf("%v: want a denial", err)
				}
				if tt.typed != nil && !errors.As(err, tt.typed) {
					t.Errorf("%v: errors.As does not reach %T", err, tt.typed)
				}
				if !strings.Contains(err.Error(), "awskms: ") {
					t.Errorf("%v: want the awskms: prefix", err)
				}
			}
			if c.calls != 2 {
				t.Errorf("%d requests with Retry.Attempts 1, want 2: the SDK must not retry", c.calls)
			}
		})
	}

	// An unknown 4xx code is left unclassified rather than guessed.
	p := openCanned(t, arn, &canned{status: 400, code: "BrandNewException"})
	_, err := p.Seal(context.Background(), key32(), ac)
	if err == nil || anchor.IsDenied(err) || anchor.IsTransient(err) || !strings.HasPrefix(err.Error(), "awskms: ") {
		t.Errorf("unknown code: %v; want an unclassified awskms error", err)
	}
}

func openCanned(t *testing.T, key string, rt http.RoundTripper) anchor.Provider {
	t.Helper()
	p, err := anchor.Open(context.Background(), "awskms://"+key+"?endpoint=http://127.0.0.1:1", anchor.Options{
		Development: true, // http:// on loopback (anchor.CheckTransport)
		Provider: map[string]any{anchor.SchemeAWSKMS: &awskms.Options{
			Credentials: testCreds, HTTPClient: &http.Client{Transport: rt},
			Retry: anchor.RetryPolicy{Attempts: 1},
		}},
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// TestTransientModes: a 503 and a refused connection are transient, and
// the provider's retry policy (not the SDK's) makes the attempts.
func TestTransientModes(t *testing.T) {
	h := newHarness(t)
	key := h.peer.CreateKey(t)
	for _, mode := range []int32{flaky503, flakyConnRefused} {
		p := h.open(t, "awskms://"+key+"?endpoint="+h.peer.URL, key,
			awskms.Options{Retry: anchor.RetryPolicy{Attempts: 2, Initial: time.Millisecond}})
		f := h.get(p).flaky
		sealed, err := p.Seal(context.Background(), key32(), ac)
		must(t, err)
		f.mode.Store(mode)
		f.calls.Store(0)
		_, err = p.Unseal(context.Background(), sealed, ac)
		if !anchor.IsTransient(err) || anchor.IsDenied(err) {
			t.Errorf("mode %d: %v; want transient", mode, err)
		}
		if n := f.calls.Load(); n != 2 {
			t.Errorf("mode %d: %d requests, want 2 (Retry.Attempts)", mode, n)
		}
		f.mode.Store(flakyOff)
		pt, err := p.Unseal(context.Background(), sealed, ac)
		must(t, err)
		if !bytes.Equal(pt, key32()) {
			t.Error("wrong plaintext after restore")
		}
	}
}

// TestBinding: a blob opens only under its own Context and key.
func TestBinding(t *testing.T) {
	h := newHarness(t)
	p, q := h.openNew(t), h.openNew(t)
	ctx := context.Background()
	sealed, err := p.Seal(ctx, key32(), ac)
	must(t, err)
	for _, other := range []anchor.Context{
		{Region: "eu-west-2", Tenant: ac.Tenant, Version: ac.Version},
		{Region: ac.Region, Tenant: "acme2", Version: ac.Version},
		{Region: ac.Region, Tenant: ac.Tenant, Version: ac.Version + 1},
	} {
		pt, err := p.Unseal(ctx, sealed, other)
		if pt != nil || !errors.Is(err, anchor.ErrInvalidCiphertext) {
			t.Errorf("Unseal under %v: %v; want ErrInvalidCiphertext", other, err)
		}
	}
	// Another key: the KeyId is pinned, so KMS refuses (IncorrectKeyException
	// on AWS and in front of local-kms) rather than opening it.
	pt, err := q.Unseal(ctx, sealed, ac)
	if pt != nil || !errors.Is(err, anchor.ErrInvalidCiphertext) {
		t.Errorf("Unseal with another key: %v; want ErrInvalidCiphertext", err)
	}
	var ike *types.IncorrectKeyException
	if !errors.As(err, &ike) {
		t.Errorf("Unseal with another key: %v; want IncorrectKeyException", err)
	}
	// Over the KMS limit: refused without a call.
	if _, err := p.Unseal(ctx, make([]byte, awskms.MaxCiphertextSize+1), ac); !errors.Is(err, anchor.ErrInvalidCiphertext) {
		t.Errorf("oversized blob: %v", err)
	}
}

// TestLocalKMSReasons pins what local-kms answers. With the KeyId pinned,
// as this package sends it, Decrypt gives AWS's codes
// (DisabledException, KMSInvalidStateException); only a Decrypt without
// KeyId gets the AccessDeniedException seen in earlier runs, which this
// package never sends.
func TestLocalKMSReasons(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	p := h.openNew(t)
	key := h.get(p).key
	sealed, err := p.Seal(ctx, key32(), ac)
	must(t, err)

	_, err = h.peer.Admin.DisableKey(ctx, &kms.DisableKeyInput{KeyId: aws.String(key)})
	must(t, err)
	_, err = p.Seal(ctx, key32(), ac)
	if !errors.Is(err, anchor.ErrDisabled) {
		t.Errorf("Seal, disabled key: %v; want ErrDisabled (DisabledException)", err)
	}
	_, err = p.Unseal(ctx, sealed, ac)
	if !errors.Is(err, anchor.ErrDisabled) {
		t.Errorf("Unseal, disabled key: %v; want ErrDisabled", err)
	}
	_, err = h.peer.Admin.Decrypt(ctx, &kms.DecryptInput{CiphertextBlob: sealed, EncryptionContext: ac.Map()})
	if code := apiCode(err); code != "AccessDeniedException" {
		t.Errorf("Decrypt without KeyId, disabled key: %v; local-kms used to answer AccessDeniedException", err)
	}
	_, err = h.peer.Admin.EnableKey(ctx, &kms.EnableKeyInput{KeyId: aws.String(key)})
	must(t, err)
	must(t, p.Check(ctx))

	_, err = h.peer.Admin.ScheduleKeyDeletion(ctx, &kms.ScheduleKeyDeletionInput{KeyId: aws.String(key), PendingWindowInDays: aws.Int32(7)})
	must(t, err)
	_, err = p.Seal(ctx, key32(), ac)
	if !errors.Is(err, anchor.ErrPendingDeletion) {
		t.Errorf("Seal, key pending deletion: %v; want ErrPendingDeletion (KMSInvalidStateException)", err)
	}
	_, err = p.Unseal(ctx, sealed, ac)
	if !errors.Is(err, anchor.ErrPendingDeletion) {
		t.Errorf("Unseal, key pending deletion: %v; want ErrPendingDeletion", err)
	}
	_, err = h.peer.Admin.CancelKeyDeletion(ctx, &kms.CancelKeyDeletionInput{KeyId: aws.String(key)})
	must(t, err)
	// A cancelled deletion leaves the key disabled, as on AWS.
	_, err = h.peer.Admin.EnableKey(ctx, &kms.EnableKeyInput{KeyId: aws.String(key)})
	must(t, err)
	must(t, p.Check(ctx))

	// A key that does not exist.
	nf := h.open(t, "awskms://arn:aws:kms:eu-west-1:111122223333:key/00000000-0000-0000-0000-000000000000?endpoint="+h.peer.URL, "", awskms.Options{})
	if err := nf.Check(ctx); !errors.Is(err, anchor.ErrKeyNotFound) {
		t.Errorf("Check, no such key: %v; want ErrKeyNotFound", err)
	}
}

func apiCode(err error) string {
	var ae smithy.APIError
	if errors.As(err, &ae) {
		return ae.ErrorCode()
	}
	return ""
}

// TestURIForms opens the key by ARN, alias, alias ARN and key id, and
// checks Describe.
func TestURIForms(t *testing.T) {
	h := newHarness(t)
	ctx := context.Background()
	arn := h.peer.CreateKey(t)
	id := arn[strings.LastIndex(arn, "/")+1:]
	_, err := h.peer.Admin.CreateAlias(ctx, &kms.CreateAliasInput{AliasName: aws.String("alias/krypton-acme"), TargetKeyId: aws.String(id)})
	must(t, err)
	ep := "endpoint=" + h.peer.URL
	uris := []string{
		"awskms://" + arn + "?" + ep,
		"awskms://" + arn + "?region=eu-west-1&" + ep,
		"awskms://alias/krypton-acme?region=eu-west-1&" + ep,
		"awskms://arn:aws:kms:eu-west-1:111122223333:alias/krypton-acme?" + ep,
		"awskms://" + id + "?region=eu-west-1&" + ep,
	}
	var blobs [][]byte
	for _, uri := range uris {
		p := h.open(t, uri, arn, awskms.Options{})
		d := p.Describe()
		if d.Scheme != "awskms" || d.Development || !strings.HasPrefix(d.URI, "awskms://") || d.Key == "" {
			t.Errorf("%s: Describe = %+v", uri, d)
		}
		for _, s := range []string{testAccessKey, testSecretKey, testToken} {
			if strings.Contains(fmt.Sprintf("%+v %#v", d, d), s) {
				t.Errorf("%s: Describe shows a credential", uri)
			}
		}
		sealed, err := p.Seal(ctx, key32(), ac)
		must(t, err)
		blobs = append(blobs, sealed)
	}
	// Every form names the same key: each opens every other's blob.
	for _, uri := range uris {
		p := h.open(t, uri, arn, awskms.Options{})
		for _, b := range blobs {
			pt, err := p.Unseal(ctx, b, ac)
			if err != nil || !bytes.Equal(pt, key32()) {
				t.Errorf("%s: %v", uri, err)
			}
		}
	}

	// Region from Options when the URI has none; none at all is an error.
	p := h.open(t, "awskms://"+id+"?"+ep, arn, awskms.Options{Region: "eu-west-1"})
	must(t, p.Check(ctx))
	_, err = anchor.Open(ctx, "awskms://"+id+"?"+ep, anchor.Options{Development: true, Provider: map[string]any{"awskms": awskms.Options{Credentials: testCreds}}})
	if err == nil || !strings.HasPrefix(err.Error(), "awskms: ") {
		t.Errorf("no region: %v", err)
	}
	_, err = anchor.Open(ctx, "awskms://"+arn, anchor.Options{Provider: map[string]any{"awskms": "wrong"}})
	if err == nil || !strings.HasPrefix(err.Error(), "awskms: ") {
		t.Errorf("options of the wrong type: %v", err)
	}
	if !slices.Contains(anchor.Registered(), "awskms") {
		t.Error("awskms not registered")
	}
}

// TestDefaultChain opens with no Options: credentials and region come from
// the environment through config.LoadDefaultConfig, and the package's own
// HTTP client is used (its idle connections closed by Close, which the
// goroutine check in TestMain watches).
func TestDefaultChain(t *testing.T) {
	h := newHarness(t)
	arn := h.peer.CreateKey(t)
	id := arn[strings.LastIndex(arn, "/")+1:]
	dir := t.TempDir()
	t.Setenv("AWS_CONFIG_FILE", dir+"/config")
	t.Setenv("AWS_SHARED_CREDENTIALS_FILE", dir+"/credentials")
	t.Setenv("AWS_EC2_METADATA_DISABLED", "true")
	t.Setenv("AWS_ACCESS_KEY_ID", testAccessKey)
	t.Setenv("AWS_SECRET_ACCESS_KEY", testSecretKey)
	t.Setenv("AWS_SESSION_TOKEN", testToken)
	t.Setenv("AWS_REGION", "eu-west-1")
	p, err := anchor.Open(context.Background(), "awskms://"+id+"?endpoint="+h.peer.URL, anchor.Options{Development: true})
	must(t, err)
	must(t, p.Check(context.Background()))
	must(t, p.Close())
	if err := p.Check(context.Background()); !errors.Is(err, anchor.ErrClosed) {
		t.Errorf("Check after Close: %v", err)
	}
}

// The test server's own switch (awskmstest.Server.SetMode), as the region's kill-switch tests use
// it: a 503 or a dropped connection is transient, never a denial, and service comes back.
func TestServerModes(t *testing.T) {
	srv := awskmstest.Start(t)
	key := srv.CreateKey(t)
	p, err := anchor.Open(context.Background(), srv.URI(key), anchor.Options{
		Logger:      anchortest.Logger(t),
		Provider:    map[string]any{anchor.SchemeAWSKMS: srv.Options()},
		Development: true, // the emulator's http:// on loopback (anchor.CheckTransport)
	})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	ctx := context.Background()
	for _, m := range []awskmstest.Mode{awskmstest.Unavailable, awskmstest.Unreachable} {
		srv.SetMode(m)
		err := p.Check(ctx)
		if !anchor.IsTransient(err) {
			t.Errorf("mode %d: Check = %v, want a *anchor.TransientError", m, err)
		}
		srv.SetMode(awskmstest.Up)
		if err := p.Check(ctx); err != nil {
			t.Fatalf("mode %d, then Up: Check = %v", m, err)
		}
	}
	srv.Disable(t, key)
	if err := p.Check(ctx); !anchor.IsDenied(err) {
		t.Errorf("Check on a disabled key = %v, want a denial", err)
	}
	srv.Enable(t, key)
	srv.ScheduleDeletion(t, key)
	if err := p.Check(ctx); !anchor.IsDenied(err) {
		t.Errorf("Check on a key pending deletion = %v, want a denial", err)
	}
	srv.CancelDeletion(t, key)
	srv.Enable(t, key)
	if err := p.Check(ctx); err != nil {
		t.Fatalf("Check after CancelDeletion and Enable: %v", err)
	}
}
