// Package gcpkmstest is an in-process Cloud KMS for tests: a
// kmspb.KeyManagementServiceServer on 127.0.0.1, served over real gRPC and
// TLS (a certificate from a throw-away CA), that the real client library
// (cloud.google.com/go/kms/apiv1) talks to. No Cloud KMS emulator is
// available offline; this fake implements what Krypton uses, as the
// service documents it:
//
//   - key rings, ENCRYPT_DECRYPT crypto keys and their versions, with a
//     primary version (CreateKeyRing, CreateCryptoKey, GetCryptoKey,
//     CreateCryptoKeyVersion, GetCryptoKeyVersion,
//     UpdateCryptoKeyPrimaryVersion);
//   - version states ENABLED, DISABLED, DESTROY_SCHEDULED and DESTROYED
//     (UpdateCryptoKeyVersion with update mask "state",
//     DestroyCryptoKeyVersion, RestoreCryptoKeyVersion, and DestroyNow for
//     the end of the scheduled-destruction period);
//   - Encrypt (primary version) and Decrypt (the version named in the
//     ciphertext) with AES-256-GCM under a random per-version secret, the
//     additional authenticated data bound, CRC32C checksums checked on
//     requests and computed on responses;
//   - the errors of the real service: FAILED_PRECONDITION "... is not
//     enabled, current state is: DISABLED." for a version that is not
//     ENABLED, NOT_FOUND, INVALID_ARGUMENT for a ciphertext that does not
//     decrypt or a request checksum that does not match;
//   - switches per crypto key: SetDenied (PERMISSION_DENIED, as a revoked
//     IAM grant), SetUnavailable (UNAVAILABLE) and Corrupt (a wrong
//     response checksum, to test the client's checks). They act on Encrypt
//     and Decrypt only, so a test can still administer the key.
//
// The ciphertext is
//
//	0x01 || uint16 BE len(version name) || version name || 12-byte nonce || GCM ciphertext and tag
//
// and the GCM additional data is everything before the nonce followed by
// the request's additional authenticated data, so a ciphertext names its
// version (as Cloud KMS's do) and any change to it fails to decrypt.
package gcpkmstest

import (
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/fips140"
	"crypto/rand"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/kms/apiv1/kmspb"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"
)

// A Checksum names a response checksum that Corrupt makes wrong.
type Checksum int

const (
	// NoCorruption answers correct checksums.
	NoCorruption Checksum = iota
	// VerifiedPlaintext makes Encrypt answer verified_plaintext_crc32c =
	// false, as if the plaintext had been damaged on the way.
	VerifiedPlaintext
	// VerifiedAAD makes Encrypt answer
	// verified_additional_authenticated_data_crc32c = false.
	VerifiedAAD
	// CiphertextCRC makes Encrypt answer a ciphertext_crc32c that does not
	// match the ciphertext.
	CiphertextCRC
	// PlaintextCRC makes Decrypt answer a plaintext_crc32c that does not
	// match the plaintext.
	PlaintextCRC
)

// Server is the fake Cloud KMS. Its methods are safe for concurrent use.
type Server struct {
	kmspb.UnimplementedKeyManagementServiceServer

	// Addr is the server's host:port on 127.0.0.1.
	Addr string

	gs    *grpc.Server
	creds credentials.TransportCredentials // the client side, trusting the test CA

	unchecked atomic.Int64 // Encrypt/Decrypt requests without CRC32C fields

	mu    sync.Mutex // guards rings and keys, and everything they point to
	rings map[string]bool
	keys  map[string]*cryptoKey
}

type cryptoKey struct {
	name        string
	purpose     kmspb.CryptoKey_CryptoKeyPurpose
	created     time.Time
	versions    []*version // versions[i] is version i+1
	primary     int        // version number; 0 means none
	denied      bool
	unavailable bool
	corrupt     Checksum
}

type version struct {
	name    string
	state   kmspb.CryptoKeyVersion_CryptoKeyVersionState
	created time.Time
	destroy time.Time
	aead    cipher.AEAD // nil once DESTROYED
}

// DestroyScheduledDuration is how long a version stays DESTROY_SCHEDULED
// in Cloud KMS by default (30 days). The fake never lets it elapse by
// itself: DestroyNow does.
const DestroyScheduledDuration = 30 * 24 * time.Hour

// NewServer starts a fake on 127.0.0.1 with a fresh TLS certificate, and
// stops it when t ends.
func NewServer(t testing.TB) *Server {
	t.Helper()
	serverTLS, clientTLS, err := newTLS()
	if err != nil {
		t.Fatalf("gcpkmstest: %v", err)
	}
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatalf("gcpkmstest: %v", err)
	}
	s := &Server{
		Addr:  lis.Addr().String(),
		gs:    grpc.NewServer(grpc.Creds(credentials.NewTLS(serverTLS))),
		creds: credentials.NewTLS(clientTLS),
		rings: map[string]bool{},
		keys:  map[string]*cryptoKey{},
	}
	kmspb.RegisterKeyManagementServiceServer(s.gs, s)
	done := make(chan struct{})
	go func() {
		defer close(done)
		s.gs.Serve(lis)
	}()
	t.Cleanup(func() {
		s.gs.Stop()
		<-done
	})
	return s
}

// ClientOptions returns the options that point the real client at the
// fake: its endpoint, TLS trusting the fake's CA, and no Google
// credentials.
func (s *Server) ClientOptions() []option.ClientOption {
	return []option.ClientOption{
		option.WithEndpoint(s.Addr),
		option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(s.creds)),
	}
}

// UncheckedRequests returns how many Encrypt and Decrypt requests came
// without their CRC32C fields. The real service accepts them; Krypton
// always sends them.
func (s *Server) UncheckedRequests() int64 { return s.unchecked.Load() }

// SetDenied makes Encrypt and Decrypt on the crypto key answer
// PERMISSION_DENIED (on) or work again (off), as revoking and restoring
// the IAM grant would.
func (s *Server) SetDenied(key string, on bool) error {
	return s.withKey(key, func(k *cryptoKey) { k.denied = on })
}

// SetUnavailable makes Encrypt and Decrypt on the crypto key answer
// UNAVAILABLE (on) or work again (off).
func (s *Server) SetUnavailable(key string, on bool) error {
	return s.withKey(key, func(k *cryptoKey) { k.unavailable = on })
}

// Corrupt makes Encrypt or Decrypt on the crypto key answer the wrong
// checksum c; NoCorruption ends it.
func (s *Server) Corrupt(key string, c Checksum) error {
	return s.withKey(key, func(k *cryptoKey) { k.corrupt = c })
}

// DestroyNow ends the scheduled-destruction period of a DESTROY_SCHEDULED
// version: it becomes DESTROYED and its secret is gone.
func (s *Server) DestroyNow(versionName string) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.version(versionName)
	if err != nil {
		return err
	}
	if v.state != kmspb.CryptoKeyVersion_DESTROY_SCHEDULED {
		return fmt.Errorf("gcpkmstest: %s is %s, not DESTROY_SCHEDULED", versionName, v.state)
	}
	v.state, v.aead = kmspb.CryptoKeyVersion_DESTROYED, nil
	return nil
}

func (s *Server) withKey(name string, f func(*cryptoKey)) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.keys[name]
	if !ok {
		return fmt.Errorf("gcpkmstest: no crypto key %s", name)
	}
	f(k)
	return nil
}

// ---- resource helpers; callers hold s.mu ----

// version finds a version by its full name.
func (s *Server) version(name string) (*version, error) {
	key, n, ok := splitVersion(name)
	if !ok {
		return nil, status.Errorf(codes.InvalidArgument, "invalid crypto key version name %q", name)
	}
	k, ok := s.keys[key]
	if !ok || n > len(k.versions) {
		return nil, status.Errorf(codes.NotFound, "%s not found.", name)
	}
	return k.versions[n-1], nil
}

func splitVersion(name string) (key string, n int, ok bool) {
	key, num, ok := strings.Cut(name, "/cryptoKeyVersions/")
	if !ok {
		return "", 0, false
	}
	n, err := strconv.Atoi(num)
	if err != nil || n < 1 || strconv.Itoa(n) != num {
		return "", 0, false
	}
	return key, n, true
}

func (k *cryptoKey) newVersion(now time.Time) (*version, error) {
	secret := make([]byte, 32)
	rand.Read(secret)
	block, err := aes.NewCipher(secret)
	clear(secret)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	// The emulator plays Google's HSMs, outside Krypton's FIPS boundary: its GCM (caller-chosen
	// nonces) runs outside GODEBUG=fips140=only's enforcement, so make test-fips can drive the
	// anchor against it.
	var aead cipher.AEAD
	fips140.WithoutEnforcement(func() { aead, err = cipher.NewGCM(block) })
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	v := &version{
		name:    fmt.Sprintf("%s/cryptoKeyVersions/%d", k.name, len(k.versions)+1),
		state:   kmspb.CryptoKeyVersion_ENABLED,
		created: now,
		aead:    aead,
	}
	k.versions = append(k.versions, v)
	return v, nil
}

func (v *version) proto() *kmspb.CryptoKeyVersion {
	pb := &kmspb.CryptoKeyVersion{
		Name:            v.name,
		State:           v.state,
		ProtectionLevel: kmspb.ProtectionLevel_SOFTWARE,
		Algorithm:       kmspb.CryptoKeyVersion_GOOGLE_SYMMETRIC_ENCRYPTION,
		CreateTime:      timestamppb.New(v.created),
	}
	if !v.destroy.IsZero() {
		pb.DestroyTime = timestamppb.New(v.destroy)
	}
	return pb
}

func (k *cryptoKey) proto() *kmspb.CryptoKey {
	pb := &kmspb.CryptoKey{
		Name:       k.name,
		Purpose:    k.purpose,
		CreateTime: timestamppb.New(k.created),
		VersionTemplate: &kmspb.CryptoKeyVersionTemplate{
			ProtectionLevel: kmspb.ProtectionLevel_SOFTWARE,
			Algorithm:       kmspb.CryptoKeyVersion_GOOGLE_SYMMETRIC_ENCRYPTION,
		},
	}
	if k.primary > 0 {
		pb.Primary = k.versions[k.primary-1].proto()
	}
	return pb
}

func notEnabled(v *version) error {
	return status.Errorf(codes.FailedPrecondition, "%s is not enabled, current state is: %s.", v.name, v.state)
}

// ---- administration ----

// CreateKeyRing implements kmspb.KeyManagementServiceServer.
func (s *Server) CreateKeyRing(_ context.Context, req *kmspb.CreateKeyRingRequest) (*kmspb.KeyRing, error) {
	if req.GetParent() == "" || req.GetKeyRingId() == "" {
		return nil, status.Error(codes.InvalidArgument, "parent and key_ring_id are required")
	}
	name := req.GetParent() + "/keyRings/" + req.GetKeyRingId()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rings[name] {
		return nil, status.Errorf(codes.AlreadyExists, "%s already exists.", name)
	}
	s.rings[name] = true
	return &kmspb.KeyRing{Name: name, CreateTime: timestamppb.Now()}, nil
}

// CreateCryptoKey implements kmspb.KeyManagementServiceServer. It makes
// version 1 the primary unless skip_initial_version_creation is set.
func (s *Server) CreateCryptoKey(_ context.Context, req *kmspb.CreateCryptoKeyRequest) (*kmspb.CryptoKey, error) {
	if req.GetCryptoKeyId() == "" || req.GetCryptoKey() == nil {
		return nil, status.Error(codes.InvalidArgument, "crypto_key_id and crypto_key are required")
	}
	name := req.GetParent() + "/cryptoKeys/" + req.GetCryptoKeyId()
	s.mu.Lock()
	defer s.mu.Unlock()
	if !s.rings[req.GetParent()] {
		return nil, status.Errorf(codes.NotFound, "%s not found.", req.GetParent())
	}
	if _, ok := s.keys[name]; ok {
		return nil, status.Errorf(codes.AlreadyExists, "%s already exists.", name)
	}
	now := time.Now()
	k := &cryptoKey{name: name, purpose: req.GetCryptoKey().GetPurpose(), created: now}
	if k.purpose == kmspb.CryptoKey_CRYPTO_KEY_PURPOSE_UNSPECIFIED {
		return nil, status.Error(codes.InvalidArgument, "crypto_key.purpose is required")
	}
	if !req.GetSkipInitialVersionCreation() {
		if _, err := k.newVersion(now); err != nil {
			return nil, err
		}
		if k.purpose == kmspb.CryptoKey_ENCRYPT_DECRYPT {
			k.primary = 1
		}
	}
	s.keys[name] = k
	return k.proto(), nil
}

// GetCryptoKey implements kmspb.KeyManagementServiceServer.
func (s *Server) GetCryptoKey(_ context.Context, req *kmspb.GetCryptoKeyRequest) (*kmspb.CryptoKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.keys[req.GetName()]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "%s not found.", req.GetName())
	}
	return k.proto(), nil
}

// CreateCryptoKeyVersion implements kmspb.KeyManagementServiceServer. The
// new version is ENABLED and not primary.
func (s *Server) CreateCryptoKeyVersion(_ context.Context, req *kmspb.CreateCryptoKeyVersionRequest) (*kmspb.CryptoKeyVersion, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.keys[req.GetParent()]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "%s not found.", req.GetParent())
	}
	v, err := k.newVersion(time.Now())
	if err != nil {
		return nil, err
	}
	return v.proto(), nil
}

// GetCryptoKeyVersion implements kmspb.KeyManagementServiceServer.
func (s *Server) GetCryptoKeyVersion(_ context.Context, req *kmspb.GetCryptoKeyVersionRequest) (*kmspb.CryptoKeyVersion, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.version(req.GetName())
	if err != nil {
		return nil, err
	}
	return v.proto(), nil
}

// UpdateCryptoKeyPrimaryVersion implements kmspb.KeyManagementServiceServer.
// The new primary must be ENABLED.
func (s *Server) UpdateCryptoKeyPrimaryVersion(_ context.Context, req *kmspb.UpdateCryptoKeyPrimaryVersionRequest) (*kmspb.CryptoKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	k, ok := s.keys[req.GetName()]
	if !ok {
		return nil, status.Errorf(codes.NotFound, "%s not found.", req.GetName())
	}
	n, err := strconv.Atoi(req.GetCryptoKeyVersionId())
	if err != nil || n < 1 || n > len(k.versions) {
		return nil, status.Errorf(codes.NotFound, "%s/cryptoKeyVersions/%s not found.", k.name, req.GetCryptoKeyVersionId())
	}
	if v := k.versions[n-1]; v.state != kmspb.CryptoKeyVersion_ENABLED {
		return nil, notEnabled(v)
	}
	k.primary = n
	return k.proto(), nil
}

// UpdateCryptoKeyVersion implements kmspb.KeyManagementServiceServer for
// the update mask "state": ENABLED <-> DISABLED. A version that is
// scheduled for destruction or destroyed cannot be updated.
func (s *Server) UpdateCryptoKeyVersion(_ context.Context, req *kmspb.UpdateCryptoKeyVersionRequest) (*kmspb.CryptoKeyVersion, error) {
	if paths := req.GetUpdateMask().GetPaths(); len(paths) != 1 || paths[0] != "state" {
		return nil, status.Error(codes.InvalidArgument, "update_mask must be [\"state\"]")
	}
	want := req.GetCryptoKeyVersion().GetState()
	if want != kmspb.CryptoKeyVersion_ENABLED && want != kmspb.CryptoKeyVersion_DISABLED {
		return nil, status.Errorf(codes.InvalidArgument, "state may only be set to ENABLED or DISABLED, not %s", want)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.version(req.GetCryptoKeyVersion().GetName())
	if err != nil {
		return nil, err
	}
	if v.state != kmspb.CryptoKeyVersion_ENABLED && v.state != kmspb.CryptoKeyVersion_DISABLED {
		return nil, status.Errorf(codes.FailedPrecondition, "%s is in state %s and cannot be updated.", v.name, v.state)
	}
	v.state = want
	return v.proto(), nil
}

// DestroyCryptoKeyVersion implements kmspb.KeyManagementServiceServer: the
// version becomes DESTROY_SCHEDULED, to be destroyed after
// DestroyScheduledDuration (see DestroyNow).
func (s *Server) DestroyCryptoKeyVersion(_ context.Context, req *kmspb.DestroyCryptoKeyVersionRequest) (*kmspb.CryptoKeyVersion, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.version(req.GetName())
	if err != nil {
		return nil, err
	}
	if v.state != kmspb.CryptoKeyVersion_ENABLED && v.state != kmspb.CryptoKeyVersion_DISABLED {
		return nil, status.Errorf(codes.FailedPrecondition, "%s is in state %s and cannot be destroyed.", v.name, v.state)
	}
	v.state, v.destroy = kmspb.CryptoKeyVersion_DESTROY_SCHEDULED, time.Now().Add(DestroyScheduledDuration)
	return v.proto(), nil
}

// RestoreCryptoKeyVersion implements kmspb.KeyManagementServiceServer: a
// DESTROY_SCHEDULED version becomes DISABLED.
func (s *Server) RestoreCryptoKeyVersion(_ context.Context, req *kmspb.RestoreCryptoKeyVersionRequest) (*kmspb.CryptoKeyVersion, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	v, err := s.version(req.GetName())
	if err != nil {
		return nil, err
	}
	if v.state != kmspb.CryptoKeyVersion_DESTROY_SCHEDULED {
		return nil, status.Errorf(codes.FailedPrecondition, "%s is in state %s and cannot be restored.", v.name, v.state)
	}
	v.state, v.destroy = kmspb.CryptoKeyVersion_DISABLED, time.Time{}
	return v.proto(), nil
}

var _ kmspb.KeyManagementServiceServer = (*Server)(nil)
