package gcpkms_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	kms "cloud.google.com/go/kms/apiv1"
	"cloud.google.com/go/kms/apiv1/kmspb"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/fieldmaskpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/kryptonkms/krypton/anchor"
	"github.com/kryptonkms/krypton/anchor/anchortest"
	"github.com/kryptonkms/krypton/anchor/gcpkms"
	"github.com/kryptonkms/krypton/anchor/gcpkms/gcpkmstest"
	"github.com/kryptonkms/krypton/internal/leaktest"
)

func TestMain(m *testing.M) { leaktest.VerifyTestMain(m, 5*time.Second) }

const ring = "projects/krypton-test/locations/europe-west1/keyRings/krypton"

// env is a fake Cloud KMS with one key ring, and an admin client (the
// real client library) that plays the customer managing their keys.
type env struct {
	srv   *gcpkmstest.Server
	admin *kms.KeyManagementClient
	n     atomic.Int64
}

func newEnv(t *testing.T) *env {
	t.Helper()
	srv := gcpkmstest.NewServer(t)
	admin, err := kms.NewKeyManagementClient(context.Background(), srv.ClientOptions()...)
	if err != nil {
		t.Fatal(err)
	}
	admin.CallOptions = &kms.KeyManagementCallOptions{}
	t.Cleanup(func() { admin.Close() })
	e := &env{srv: srv, admin: admin}
	if _, err := admin.CreateKeyRing(ctx(t), &kmspb.CreateKeyRingRequest{
		Parent: "projects/krypton-test/locations/europe-west1", KeyRingId: "krypton",
	}); err != nil {
		t.Fatal(err)
	}
	return e
}

func ctx(t *testing.T) context.Context {
	c, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return c
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

// newKey creates a fresh ENCRYPT_DECRYPT key and returns its name.
func (e *env) newKey(t *testing.T) string {
	t.Helper()
	k, err := e.admin.CreateCryptoKey(ctx(t), &kmspb.CreateCryptoKeyRequest{
		Parent:      ring,
		CryptoKeyId: fmt.Sprintf("tenant-root-%d", e.n.Add(1)),
		CryptoKey:   &kmspb.CryptoKey{Purpose: kmspb.CryptoKey_ENCRYPT_DECRYPT},
	})
	must(t, err)
	return k.GetName()
}

func (e *env) open(t *testing.T, key string) anchor.Provider {
	t.Helper()
	p, err := anchor.Open(ctx(t), "gcpkms://"+key, anchor.Options{
		Logger:   anchortest.Logger(t),
		Provider: map[string]any{"gcpkms": gcpkms.Options{ClientOptions: e.srv.ClientOptions()}},
	})
	must(t, err)
	return p
}

func (e *env) primary(t *testing.T, key string) string {
	t.Helper()
	k, err := e.admin.GetCryptoKey(ctx(t), &kmspb.GetCryptoKeyRequest{Name: key})
	must(t, err)
	return k.GetPrimary().GetName()
}

func (e *env) setState(t *testing.T, version string, st kmspb.CryptoKeyVersion_CryptoKeyVersionState) {
	t.Helper()
	_, err := e.admin.UpdateCryptoKeyVersion(ctx(t), &kmspb.UpdateCryptoKeyVersionRequest{
		CryptoKeyVersion: &kmspb.CryptoKeyVersion{Name: version, State: st},
		UpdateMask:       &fieldmaskpb.FieldMask{Paths: []string{"state"}},
	})
	must(t, err)
}

func (e *env) destroy(t *testing.T, version string) {
	t.Helper()
	v, err := e.admin.DestroyCryptoKeyVersion(ctx(t), &kmspb.DestroyCryptoKeyVersionRequest{Name: version})
	must(t, err)
	if v.GetState() != kmspb.CryptoKeyVersion_DESTROY_SCHEDULED {
		t.Fatalf("DestroyCryptoKeyVersion: state %s", v.GetState())
	}
}

func TestConformance(t *testing.T) {
	e := newEnv(t)
	key := func(p anchor.Provider) string { return p.Describe().Key }
	anchortest.Run(t, anchortest.Harness{
		Open:   func(t *testing.T) anchor.Provider { return e.open(t, e.newKey(t)) },
		Reopen: func(t *testing.T, p anchor.Provider) anchor.Provider { return e.open(t, key(p)) },
		Disable: func(t *testing.T, p anchor.Provider) {
			e.setState(t, e.primary(t, key(p)), kmspb.CryptoKeyVersion_DISABLED)
		},
		Enable: func(t *testing.T, p anchor.Provider) {
			e.setState(t, e.primary(t, key(p)), kmspb.CryptoKeyVersion_ENABLED)
		},
		Destroy: func(t *testing.T, p anchor.Provider) { e.destroy(t, e.primary(t, key(p))) },
		FailTransiently: func(t *testing.T, p anchor.Provider) func() {
			must(t, e.srv.SetUnavailable(key(p), true))
			return func() { must(t, e.srv.SetUnavailable(key(p), false)) }
		},
		ExactReasons: true,
	})
	if n := e.srv.UncheckedRequests(); n != 0 {
		t.Errorf("%d Encrypt/Decrypt requests without CRC32C checksums", n)
	}
}

var ac = anchor.Context{Region: "eu-west-1", Tenant: "acme", Version: 1}

func wantDenied(t *testing.T, what string, err, reason error) {
	t.Helper()
	if !anchor.IsDenied(err) || anchor.IsTransient(err) || !errors.Is(err, reason) {
		t.Errorf("%s: %v, want a denial matching %v", what, err, reason)
	}
}

func wantTransient(t *testing.T, what string, err error) {
	t.Helper()
	if !anchor.IsTransient(err) || anchor.IsDenied(err) || !errors.Is(err, anchor.ErrUnavailable) {
		t.Errorf("%s: %v, want transient", what, err)
	}
}

func seal(t *testing.T, p anchor.Provider, pt []byte, ac anchor.Context) []byte {
	t.Helper()
	b, err := p.Seal(ctx(t), pt, ac)
	must(t, err)
	return b
}

func unsealOK(t *testing.T, p anchor.Provider, sealed, want []byte, ac anchor.Context) {
	t.Helper()
	got, err := p.Unseal(ctx(t), sealed, ac)
	if err != nil {
		t.Fatalf("Unseal: %v", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatal("Unseal returned other bytes")
	}
}

// The client checks the service's checksums and treats a mismatch as
// transient (Google's guidance: retry a limited number of times).
func TestResponseChecksums(t *testing.T) {
	e := newEnv(t)
	key := e.newKey(t)
	p := e.open(t, key)
	defer p.Close()
	pt := bytes.Repeat([]byte{0x5a}, 32)
	sealed := seal(t, p, pt, ac)
	for _, c := range []struct {
		name string
		sum  gcpkmstest.Checksum
		op   string
	}{
		{"verified_plaintext_crc32c false", gcpkmstest.VerifiedPlaintext, "seal"},
		{"verified_additional_authenticated_data_crc32c false", gcpkmstest.VerifiedAAD, "seal"},
		{"ciphertext_crc32c wrong", gcpkmstest.CiphertextCRC, "seal"},
		{"plaintext_crc32c wrong", gcpkmstest.PlaintextCRC, "unseal"},
	} {
		t.Run(c.name, func(t *testing.T) {
			must(t, e.srv.Corrupt(key, c.sum))
			defer func() { must(t, e.srv.Corrupt(key, gcpkmstest.NoCorruption)) }()
			var out []byte
			var err error
			if c.op == "seal" {
				out, err = p.Seal(ctx(t), pt, ac)
			} else {
				out, err = p.Unseal(ctx(t), sealed, ac)
			}
			if out != nil {
				t.Errorf("%s returned bytes despite a bad checksum", c.op)
			}
			wantTransient(t, c.op, err)
			// The other direction still works.
			if c.op == "seal" {
				unsealOK(t, p, sealed, pt, ac)
			} else {
				seal(t, p, pt, ac)
			}
		})
	}
	unsealOK(t, p, sealed, pt, ac)
	if n := e.srv.UncheckedRequests(); n != 0 {
		t.Errorf("%d requests without CRC32C checksums", n)
	}
}

// The fake checks request checksums as the service does, so that the
// provider's checksums are known to be right (the conformance suite
// would fail otherwise) and a wrong one is refused.
func TestRequestChecksums(t *testing.T) {
	e := newEnv(t)
	key := e.newKey(t)
	aad := ac.AAD()
	_, err := e.admin.Encrypt(ctx(t), &kmspb.EncryptRequest{
		Name: key, Plaintext: []byte("x"), PlaintextCrc32C: wrapperspb.Int64(1),
		AdditionalAuthenticatedData: aad,
	})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("Encrypt with a wrong plaintext_crc32c: %v, want InvalidArgument", err)
	}
	_, err = e.admin.Decrypt(ctx(t), &kmspb.DecryptRequest{
		Name: key, Ciphertext: []byte("xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx"), CiphertextCrc32C: wrapperspb.Int64(1),
	})
	if status.Code(err) != codes.InvalidArgument {
		t.Errorf("Decrypt with a wrong ciphertext_crc32c: %v, want InvalidArgument", err)
	}
	if e.srv.UncheckedRequests() == 0 {
		t.Error("the fake did not count requests without a full set of checksums")
	}
}

func TestInvalidCiphertext(t *testing.T) {
	e := newEnv(t)
	p := e.open(t, e.newKey(t))
	defer p.Close()
	pt := bytes.Repeat([]byte{7}, 32)
	sealed := seal(t, p, pt, ac)
	_, err := p.Unseal(ctx(t), sealed, anchor.Context{Region: ac.Region, Tenant: ac.Tenant, Version: 2})
	wantDenied(t, "wrong AAD", err, anchor.ErrInvalidCiphertext)
	for name, i := range map[string]int{"version name": 10, "nonce": len(sealed) - 30, "tag": len(sealed) - 1} {
		bad := bytes.Clone(sealed)
		bad[i] ^= 1
		_, err := p.Unseal(ctx(t), bad, ac)
		wantDenied(t, "tampered "+name, err, anchor.ErrInvalidCiphertext)
	}
	// A blob of another key of the same project never opens.
	q := e.open(t, e.newKey(t))
	defer q.Close()
	_, err = q.Unseal(ctx(t), sealed, ac)
	wantDenied(t, "other key", err, anchor.ErrInvalidCiphertext)
	unsealOK(t, p, sealed, pt, ac)
}

func TestAccessDenied(t *testing.T) {
	e := newEnv(t)
	key := e.newKey(t)
	p := e.open(t, key)
	defer p.Close()
	pt := bytes.Repeat([]byte{9}, 32)
	sealed := seal(t, p, pt, ac)
	must(t, e.srv.SetDenied(key, true))
	wantDenied(t, "Check", p.Check(ctx(t)), anchor.ErrAccessDenied)
	_, err := p.Seal(ctx(t), pt, ac)
	wantDenied(t, "Seal", err, anchor.ErrAccessDenied)
	_, err = p.Unseal(ctx(t), sealed, ac)
	wantDenied(t, "Unseal", err, anchor.ErrAccessDenied)
	must(t, e.srv.SetDenied(key, false))
	unsealOK(t, p, sealed, pt, ac)
}

func TestKeyNotFound(t *testing.T) {
	e := newEnv(t)
	p := e.open(t, ring+"/cryptoKeys/no-such-key")
	defer p.Close()
	wantDenied(t, "Check", p.Check(ctx(t)), anchor.ErrKeyNotFound)
}

// An endpoint where nothing listens is transient, never a denial.
func TestUnreachable(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	must(t, err)
	addr := l.Addr().String()
	l.Close()
	e := newEnv(t)
	opts := slices.Clone(e.srv.ClientOptions()) // TLS and no auth; endpoint overridden below
	p, err := anchor.Open(ctx(t), "gcpkms://"+ring+"/cryptoKeys/k?endpoint="+addr, anchor.Options{
		Logger:   anchortest.Logger(t),
		Provider: map[string]any{"gcpkms": &gcpkms.Options{ClientOptions: opts[1:], CallTimeout: 2 * time.Second}},
	})
	must(t, err)
	defer p.Close()
	wantTransient(t, "Check", p.Check(ctx(t)))
}

// The fake speaks TLS only: a plaintext client, or one that does not
// trust the fake's CA, gets no answer, and that is transient.
func TestFakeRequiresTLS(t *testing.T) {
	e := newEnv(t)
	key := e.newKey(t)
	for name, dial := range map[string]option.ClientOption{
		"plaintext":      option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())),
		"untrusted root": option.WithGRPCDialOption(grpc.WithTransportCredentials(credentials.NewTLS(&tls.Config{RootCAs: x509.NewCertPool()}))),
	} {
		p, err := anchor.Open(ctx(t), "gcpkms://"+key, anchor.Options{Provider: map[string]any{"gcpkms": gcpkms.Options{
			Endpoint:      e.srv.Addr,
			ClientOptions: []option.ClientOption{option.WithoutAuthentication(), dial},
			CallTimeout:   2 * time.Second,
		}}})
		must(t, err)
		wantTransient(t, name, p.Check(ctx(t)))
		p.Close()
	}
}

// Options come through anchor.Options.Provider as a value or a pointer;
// the URI's endpoint is used when Options.Endpoint is empty.
func TestOptions(t *testing.T) {
	e := newEnv(t)
	key := e.newKey(t)
	opts := e.srv.ClientOptions()[1:] // without WithEndpoint
	for name, o := range map[string]any{
		"endpoint option": gcpkms.Options{Endpoint: e.srv.Addr, ClientOptions: opts},
		"pointer":         &gcpkms.Options{Endpoint: e.srv.Addr, ClientOptions: opts},
	} {
		p, err := anchor.Open(ctx(t), "gcpkms://"+key, anchor.Options{Provider: map[string]any{"gcpkms": o}})
		must(t, err)
		if err := p.Check(ctx(t)); err != nil {
			t.Errorf("%s: Check: %v", name, err)
		}
		p.Close()
	}
	p, err := anchor.Open(ctx(t), "gcpkms://"+key+"?endpoint="+e.srv.Addr,
		anchor.Options{Provider: map[string]any{"gcpkms": gcpkms.Options{ClientOptions: opts}}})
	must(t, err)
	if err := p.Check(ctx(t)); err != nil {
		t.Errorf("URI endpoint: Check: %v", err)
	}
	if d := p.Describe(); d.Key != key || d.Scheme != "gcpkms" || d.Development {
		t.Errorf("Describe() = %+v", d)
	}
	p.Close()
	_, err = anchor.Open(ctx(t), "gcpkms://"+key, anchor.Options{Provider: map[string]any{"gcpkms": "nope"}})
	if err == nil || err.Error()[:8] != "gcpkms: " {
		t.Errorf("Open with options of the wrong type: %v", err)
	}
}

// Rotation and the kill switch: Cloud KMS encrypts with the primary
// version and decrypts with the version the ciphertext names.
func TestVersions(t *testing.T) {
	e := newEnv(t)
	key := e.newKey(t)
	p := e.open(t, key)
	defer p.Close()
	v1 := e.primary(t, key)
	pt1, pt2 := bytes.Repeat([]byte{1}, 32), bytes.Repeat([]byte{2}, 32)
	b1 := seal(t, p, pt1, ac)

	v2, err := e.admin.CreateCryptoKeyVersion(ctx(t), &kmspb.CreateCryptoKeyVersionRequest{Parent: key})
	must(t, err)
	_, err = e.admin.UpdateCryptoKeyPrimaryVersion(ctx(t), &kmspb.UpdateCryptoKeyPrimaryVersionRequest{Name: key, CryptoKeyVersionId: "2"})
	must(t, err)
	b2 := seal(t, p, pt2, ac)
	unsealOK(t, p, b1, pt1, ac)
	unsealOK(t, p, b2, pt2, ac)

	// Disabling an older version refuses its blobs; Check (the primary)
	// still passes.
	e.setState(t, v1, kmspb.CryptoKeyVersion_DISABLED)
	_, err = p.Unseal(ctx(t), b1, ac)
	wantDenied(t, "Unseal of a v1 blob, v1 disabled", err, anchor.ErrDisabled)
	unsealOK(t, p, b2, pt2, ac)
	must(t, p.Check(ctx(t)))
	e.setState(t, v1, kmspb.CryptoKeyVersion_ENABLED)

	// Disabling the primary pulls the kill switch (Check, Seal) although
	// blobs of the older, enabled version still open.
	e.setState(t, v2.GetName(), kmspb.CryptoKeyVersion_DISABLED)
	wantDenied(t, "Check, primary disabled", p.Check(ctx(t)), anchor.ErrDisabled)
	_, err = p.Seal(ctx(t), pt1, ac)
	wantDenied(t, "Seal, primary disabled", err, anchor.ErrDisabled)
	unsealOK(t, p, b1, pt1, ac)
	e.setState(t, v2.GetName(), kmspb.CryptoKeyVersion_ENABLED)

	// Destroying: pending deletion first, destroyed at the end of the
	// scheduled period; a restore within it brings the version back
	// DISABLED.
	e.destroy(t, v1)
	_, err = p.Unseal(ctx(t), b1, ac)
	wantDenied(t, "Unseal, v1 destroy scheduled", err, anchor.ErrPendingDeletion)
	_, err = e.admin.RestoreCryptoKeyVersion(ctx(t), &kmspb.RestoreCryptoKeyVersionRequest{Name: v1})
	must(t, err)
	_, err = p.Unseal(ctx(t), b1, ac)
	wantDenied(t, "Unseal, v1 restored", err, anchor.ErrDisabled)
	e.setState(t, v1, kmspb.CryptoKeyVersion_ENABLED)
	unsealOK(t, p, b1, pt1, ac)

	e.destroy(t, v1)
	must(t, e.srv.DestroyNow(v1))
	_, err = p.Unseal(ctx(t), b1, ac)
	wantDenied(t, "Unseal, v1 destroyed", err, anchor.ErrDestroyed)
	_, err = e.admin.RestoreCryptoKeyVersion(ctx(t), &kmspb.RestoreCryptoKeyVersionRequest{Name: v1})
	if status.Code(err) != codes.FailedPrecondition {
		t.Errorf("restore of a destroyed version: %v", err)
	}
	unsealOK(t, p, b2, pt2, ac)

	e.destroy(t, v2.GetName())
	must(t, e.srv.DestroyNow(v2.GetName()))
	wantDenied(t, "Check, primary destroyed", p.Check(ctx(t)), anchor.ErrDestroyed)
}

// TestLatency measures Seal and Unseal against the fake over TLS on
// loopback: go test -race -run TestLatency -v ./anchor/gcpkms/
func TestLatency(t *testing.T) {
	e := newEnv(t)
	p := e.open(t, e.newKey(t))
	defer p.Close()
	const n = 500
	pt := bytes.Repeat([]byte{3}, 32)
	blobs := make([][]byte, n)
	sealT, unsealT := make([]time.Duration, n), make([]time.Duration, n)
	for i := range n {
		start := time.Now()
		blobs[i] = seal(t, p, pt, ac)
		sealT[i] = time.Since(start)
	}
	for i := range n {
		start := time.Now()
		unsealOK(t, p, blobs[i], pt, ac)
		unsealT[i] = time.Since(start)
	}
	for name, d := range map[string][]time.Duration{"seal": sealT, "unseal": unsealT} {
		slices.Sort(d)
		t.Logf("%s: %d calls, median %v, p99 %v, max %v", name, n, d[n/2], d[n*99/100], d[n-1])
	}
}
