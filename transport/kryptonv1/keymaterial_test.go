package kryptonv1_test

import (
	"strings"
	"testing"

	"google.golang.org/protobuf/reflect/protodesc"
	"google.golang.org/protobuf/reflect/protoreflect"
	"google.golang.org/protobuf/reflect/protoregistry"
	"google.golang.org/protobuf/types/descriptorpb"

	_ "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// allowedKeyFields are the only fields of package krypton.v1 whose names look
// like key material. Adding an entry needs a reason that a reviewer accepts:
// no message may carry an L1, L2 or L3 in plaintext, not even inside TLS.
var allowedKeyFields = map[protoreflect.FullName]string{
	"krypton.v1.WrapRequest.plaintext":             "L4 data key to wrap",
	"krypton.v1.UnwrapResponse.plaintext":          "unwrapped L4 data key",
	"krypton.v1.GenerateDataKeyResponse.plaintext": "generated L4 data key",
	// The packed batch forms (PackedWrap, PackedUnwrap, PackedGenerateDataKey).
	"krypton.v1.PackedWrapRequest.plaintexts":             "L4 data keys to wrap",
	"krypton.v1.PackedUnwrapResponse.plaintexts":          "unwrapped L4 data keys",
	"krypton.v1.PackedGenerateDataKeyResponse.plaintexts": "generated L4 data keys",
	// A delegated wrapping key (WrapService.DelegateWrap): not L3 but the one-time key derived
	// from L3 and one fresh salt (wrap.DeriveWrapKey, one-way), which opens only the blobs of that
	// salt, all sealed by its holder; it lets its holder do what Wrap already does
	// (docs/gateway.md, "Delegated data keys"; docs/security.md).
	"krypton.v1.DelegateWrapResponse.derived_key": "one-time data-key wrapping key of one salt (not L3)",
	// HPKE transfer of an L2 (NodeService.FetchTenantKey): a public key, the
	// public KEM output and the sealed L2; none opens without the follower's
	// ephemeral private key, which never leaves it.
	"krypton.v1.FetchTenantKeyRequest.recipient_public_key": "ephemeral HPKE public key",
	"krypton.v1.FetchTenantKeyResponse.encapsulated_key":    "HPKE encapsulated key (public)",
	// A tenant's owner key (internal/owner): only its public half (PKIX PEM) travels, and its
	// RFC 7638 thumbprint names it in answers and events; the private half stays with the customer.
	"krypton.v1.CreateTenantRequest.owner_public_key":           "owner public key (PEM)",
	"krypton.v1.GovernanceCreateTenantRequest.owner_public_key": "owner public key (PEM)",
	"krypton.v1.SetOwnerKeyRequest.owner_public_key":            "owner public key (PEM)",
	"krypton.v1.Tenant.owner_key_fingerprint":                   "owner public key thumbprint",
	"krypton.v1.GovernanceTenant.owner_key_fingerprint":         "owner public key thumbprint",
	"krypton.v1.RevocationEvent.owner_key_fingerprint":          "owner public key thumbprint",
}

// Words that name key material. secretWords condemn a field of any type;
// keyWords condemn a bytes or string field, where a key's bytes could travel
// (a uint32 tenant_key_version or a KeyRef message named key is fine: the
// walk checks KeyRef's own fields).
var (
	secretWords = []string{
		"plaintext", "cleartext", "secret", "secrets", "private", "unsealed",
		"material", "password", "passphrase", "seed", "pin", "dek", "kek",
	}
	keyWords = []string{"key", "keys", "l1", "l2", "l3", "l4", "tenantkey", "servicekey", "datakey"}
)

// checkField returns a non-empty reason if fd is named like key material.
func checkField(fd protoreflect.FieldDescriptor) string {
	words := strings.Split(strings.ToLower(string(fd.Name())), "_")
	// Also catch run-together names such as "l2key" or "rawsecret".
	joined := strings.Join(words, "")
	for _, w := range words {
		for _, bad := range secretWords {
			if w == bad {
				return "field name contains " + bad
			}
		}
	}
	for _, bad := range []string{"plaintext", "secret", "private", "unsealed"} {
		if strings.Contains(joined, bad) {
			return "field name contains " + bad
		}
	}
	// A map's key field is named "key" by protobuf itself (the map's index: a region or a service
	// name); its values are checked like any other field.
	if fd.ContainingMessage().IsMapEntry() && fd.Name() == "key" && fd.Kind() == protoreflect.StringKind {
		return ""
	}
	switch fd.Kind() {
	case protoreflect.BytesKind, protoreflect.StringKind:
		for _, w := range words {
			for _, bad := range keyWords {
				if w == bad {
					return "bytes or string field named " + bad
				}
			}
		}
		for _, bad := range []string{"l1key", "l2key", "l3key", "l4key", "l2", "l3"} {
			if strings.Contains(joined, bad) {
				return "bytes or string field named like " + bad
			}
		}
	}
	return ""
}

// walkMessages calls fn for every field of every message (nested ones too)
// declared in the files of package pkg.
func walkMessages(t *testing.T, files *protoregistry.Files, pkg protoreflect.FullName, fn func(protoreflect.FieldDescriptor)) (nfiles, nfields int) {
	t.Helper()
	var walk func(protoreflect.MessageDescriptors)
	walk = func(msgs protoreflect.MessageDescriptors) {
		for i := 0; i < msgs.Len(); i++ {
			md := msgs.Get(i)
			fields := md.Fields()
			for j := 0; j < fields.Len(); j++ {
				nfields++
				fn(fields.Get(j))
			}
			walk(md.Messages())
		}
	}
	files.RangeFilesByPackage(pkg, func(fd protoreflect.FileDescriptor) bool {
		nfiles++
		walk(fd.Messages())
		return true
	})
	return nfiles, nfields
}

// TestNoKeyMaterialFields fails if a message of krypton.v1 gains a field
// named like key material that is not in allowedKeyFields: an L2 or L3 must
// never be put in a protobuf message.
func TestNoKeyMaterialFields(t *testing.T) {
	seen := make(map[protoreflect.FullName]bool)
	nfiles, nfields := walkMessages(t, protoregistry.GlobalFiles, "krypton.v1", func(fd protoreflect.FieldDescriptor) {
		why := checkField(fd)
		if why == "" {
			return
		}
		if _, ok := allowedKeyFields[fd.FullName()]; ok {
			seen[fd.FullName()] = true
			return
		}
		t.Errorf("%s: %s; protobuf messages must not carry key material (only L4 plaintext, allow-listed in this test)", fd.FullName(), why)
	})
	// The walk must have found the package, or the test proves nothing.
	if nfiles < 5 || nfields < 100 {
		t.Fatalf("walked %d files and %d fields of krypton.v1; the generated package is not registered", nfiles, nfields)
	}
	// A stale allow-list entry would silently allow a future field of that name.
	for name := range allowedKeyFields {
		if !seen[name] {
			t.Errorf("allow-list entry %s matches no key-like field; remove it", name)
		}
	}
}

// TestCheckFieldCatches proves that checkField rejects the fields it exists
// to reject, on a synthetic file built at run time.
func TestCheckFieldCatches(t *testing.T) {
	bytesT := descriptorpb.FieldDescriptorProto_TYPE_BYTES.Enum()
	stringT := descriptorpb.FieldDescriptorProto_TYPE_STRING.Enum()
	uint32T := descriptorpb.FieldDescriptorProto_TYPE_UINT32.Enum()
	field := func(name string, n int32, typ *descriptorpb.FieldDescriptorProto_Type) *descriptorpb.FieldDescriptorProto {
		return &descriptorpb.FieldDescriptorProto{
			Name:     &name,
			Number:   &n,
			Type:     typ,
			Label:    descriptorpb.FieldDescriptorProto_LABEL_OPTIONAL.Enum(),
			JsonName: &name,
		}
	}
	bad := []*descriptorpb.FieldDescriptorProto{
		field("l2", 1, bytesT),
		field("tenant_key", 2, bytesT),
		field("l3_key", 3, bytesT),
		field("unsealed_l2", 4, bytesT),
		field("plaintext", 5, bytesT),
		field("secret", 6, stringT),
		field("private_key", 7, bytesT),
		field("service_key_bytes", 8, bytesT),
		field("l2key", 9, bytesT),
		field("rawsecret", 10, bytesT),
		field("key", 11, stringT),
		field("data_key_plaintext", 12, bytesT),
	}
	good := []*descriptorpb.FieldDescriptorProto{
		field("tenant_key_version", 1, uint32T),
		field("blob", 2, bytesT),
		field("context", 3, bytesT),
		field("anchor_uri", 4, stringT),
		field("tenant", 5, stringT),
		field("ciphertext", 6, bytesT),
	}
	name, pkg := "keymaterial_test.proto", "keymaterialtest"
	syntax := "proto3"
	fdp := &descriptorpb.FileDescriptorProto{
		Name:    &name,
		Package: &pkg,
		Syntax:  &syntax,
		MessageType: []*descriptorpb.DescriptorProto{
			{Name: strPtr("Bad"), Field: bad},
			{Name: strPtr("Outer"), NestedType: []*descriptorpb.DescriptorProto{{Name: strPtr("Good"), Field: good}}},
		},
	}
	fd, err := protodesc.NewFile(fdp, nil)
	if err != nil {
		t.Fatal(err)
	}
	files := new(protoregistry.Files)
	if err := files.RegisterFile(fd); err != nil {
		t.Fatal(err)
	}
	flagged := make(map[protoreflect.Name]bool)
	walkMessages(t, files, "keymaterialtest", func(f protoreflect.FieldDescriptor) {
		if checkField(f) != "" {
			flagged[f.Name()] = true
		}
	})
	for _, f := range bad {
		if !flagged[protoreflect.Name(f.GetName())] {
			t.Errorf("checkField accepts %s (%s); it must reject it", f.GetName(), f.GetType())
		}
	}
	for _, f := range good {
		if flagged[protoreflect.Name(f.GetName())] {
			t.Errorf("checkField rejects %s (%s); it must accept it", f.GetName(), f.GetType())
		}
	}
}

func strPtr(s string) *string { return &s }
