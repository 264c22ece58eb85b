package gcpkmstest

import (
	"context"
	"crypto/rand"
	"encoding/binary"
	"hash/crc32"

	"cloud.google.com/go/kms/apiv1/kmspb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// ---- cryptography: Encrypt and Decrypt, with the service's CRC32C checks ----

var castagnoli = crc32.MakeTable(crc32.Castagnoli)

func crc(b []byte) int64 { return int64(crc32.Checksum(b, castagnoli)) }

// checkCRC verifies an optional request checksum, as the service does.
func checkCRC(field string, data []byte, sum *wrapperspb.Int64Value) error {
	if sum != nil && sum.GetValue() != crc(data) {
		return status.Errorf(codes.InvalidArgument,
			"The checksum in field %s_crc32c did not match the data in field %s.", field, field)
	}
	return nil
}

// usable finds an ENCRYPT_DECRYPT key by name and applies its switches.
func (s *Server) usable(name, perm string) (*cryptoKey, error) {
	k, ok := s.keys[name]
	switch {
	case ok && k.unavailable:
		return nil, status.Error(codes.Unavailable, "The service is currently unavailable.")
	case ok && k.denied:
		return nil, status.Errorf(codes.PermissionDenied,
			"Permission '%s' denied on resource '%s' (or it may not exist).", perm, name)
	case !ok:
		if _, _, isVersion := splitVersion(name); isVersion {
			return nil, status.Error(codes.InvalidArgument, "this fake only encrypts and decrypts by crypto key name")
		}
		return nil, status.Errorf(codes.NotFound, "%s not found.", name)
	case k.purpose != kmspb.CryptoKey_ENCRYPT_DECRYPT:
		return nil, status.Errorf(codes.InvalidArgument, "%s has purpose %s, not ENCRYPT_DECRYPT.", name, k.purpose)
	}
	return k, nil
}

const nonceSize = 12

// Encrypt implements kmspb.KeyManagementServiceServer with the primary
// version.
func (s *Server) Encrypt(_ context.Context, req *kmspb.EncryptRequest) (*kmspb.EncryptResponse, error) {
	if req.GetPlaintextCrc32C() == nil || req.GetAdditionalAuthenticatedDataCrc32C() == nil {
		s.unchecked.Add(1)
	}
	if len(req.GetPlaintext()) > 64*1024 || len(req.GetAdditionalAuthenticatedData()) > 64*1024 {
		return nil, status.Error(codes.InvalidArgument, "plaintext and additional_authenticated_data must be no larger than 64KiB")
	}
	if err := checkCRC("plaintext", req.GetPlaintext(), req.GetPlaintextCrc32C()); err != nil {
		return nil, err
	}
	if err := checkCRC("additional_authenticated_data", req.GetAdditionalAuthenticatedData(), req.GetAdditionalAuthenticatedDataCrc32C()); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k, err := s.usable(req.GetName(), "cloudkms.cryptoKeyVersions.useToEncrypt")
	if err != nil {
		return nil, err
	}
	if k.primary == 0 {
		return nil, status.Errorf(codes.FailedPrecondition, "%s has no primary version.", k.name)
	}
	v := k.versions[k.primary-1]
	if v.state != kmspb.CryptoKeyVersion_ENABLED {
		return nil, notEnabled(v)
	}
	header := make([]byte, 3, 3+len(v.name)+nonceSize+len(req.GetPlaintext())+16)
	header[0] = 1
	binary.BigEndian.PutUint16(header[1:], uint16(len(v.name)))
	header = append(header, v.name...)
	hlen := len(header)
	out := append(header, make([]byte, nonceSize)...)
	nonce := out[hlen:]
	rand.Read(nonce)
	out = v.aead.Seal(out, nonce, req.GetPlaintext(), gcmAAD(out[:hlen], req.GetAdditionalAuthenticatedData()))
	resp := &kmspb.EncryptResponse{
		Name:                    v.name,
		Ciphertext:              out,
		CiphertextCrc32C:        wrapperspb.Int64(crc(out)),
		VerifiedPlaintextCrc32C: req.GetPlaintextCrc32C() != nil,
		VerifiedAdditionalAuthenticatedDataCrc32C: req.GetAdditionalAuthenticatedDataCrc32C() != nil,
		ProtectionLevel: kmspb.ProtectionLevel_SOFTWARE,
	}
	switch k.corrupt {
	case VerifiedPlaintext:
		resp.VerifiedPlaintextCrc32C = false
	case VerifiedAAD:
		resp.VerifiedAdditionalAuthenticatedDataCrc32C = false
	case CiphertextCRC:
		resp.CiphertextCrc32C = wrapperspb.Int64(crc(out) ^ 1)
	}
	return resp, nil
}

func gcmAAD(header, aad []byte) []byte {
	return append(append(make([]byte, 0, len(header)+len(aad)), header...), aad...)
}

var errInvalidCiphertext = status.Error(codes.InvalidArgument, "Decryption failed: the ciphertext is invalid.")

// Decrypt implements kmspb.KeyManagementServiceServer with the version the
// ciphertext names.
func (s *Server) Decrypt(_ context.Context, req *kmspb.DecryptRequest) (*kmspb.DecryptResponse, error) {
	if req.GetCiphertextCrc32C() == nil || req.GetAdditionalAuthenticatedDataCrc32C() == nil {
		s.unchecked.Add(1)
	}
	ct := req.GetCiphertext()
	if len(ct) > 64*1024+800 {
		return nil, status.Error(codes.InvalidArgument, "ciphertext too large")
	}
	if err := checkCRC("ciphertext", ct, req.GetCiphertextCrc32C()); err != nil {
		return nil, err
	}
	if err := checkCRC("additional_authenticated_data", req.GetAdditionalAuthenticatedData(), req.GetAdditionalAuthenticatedDataCrc32C()); err != nil {
		return nil, err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	k, err := s.usable(req.GetName(), "cloudkms.cryptoKeyVersions.useToDecrypt")
	if err != nil {
		return nil, err
	}
	if len(ct) < 3 || ct[0] != 1 {
		return nil, errInvalidCiphertext
	}
	hlen := 3 + int(binary.BigEndian.Uint16(ct[1:]))
	if len(ct) < hlen+nonceSize+16 {
		return nil, errInvalidCiphertext
	}
	key, n, ok := splitVersion(string(ct[3:hlen]))
	if !ok || key != k.name || n > len(k.versions) {
		return nil, errInvalidCiphertext
	}
	v := k.versions[n-1]
	if v.state != kmspb.CryptoKeyVersion_ENABLED {
		return nil, notEnabled(v)
	}
	pt, err := v.aead.Open(nil, ct[hlen:hlen+nonceSize], ct[hlen+nonceSize:], gcmAAD(ct[:hlen], req.GetAdditionalAuthenticatedData()))
	if err != nil {
		return nil, errInvalidCiphertext
	}
	resp := &kmspb.DecryptResponse{
		Plaintext:       pt,
		PlaintextCrc32C: wrapperspb.Int64(crc(pt)),
		UsedPrimary:     n == k.primary,
		ProtectionLevel: kmspb.ProtectionLevel_SOFTWARE,
	}
	if k.corrupt == PlaintextCRC {
		resp.PlaintextCrc32C = wrapperspb.Int64(crc(pt) ^ 1)
	}
	return resp, nil
}
