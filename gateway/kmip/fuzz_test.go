package kmip

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/kryptonkms/krypton/gateway/kmip/kmiptest"
	"github.com/kryptonkms/krypton/gateway/kmip/ttlv"
	"github.com/kryptonkms/krypton/internal/pki"
)

// FuzzHandleMessage feeds arbitrary bytes to the message layer, as a client
// could after the handshake: whatever comes in, the server answers with a
// well-formed Response Message whose Batch Count matches its items, and
// never panics. The committed corpus is in testdata/fuzz/FuzzHandleMessage;
// valid requests of every operation and the published vectors are seeds.
func FuzzHandleMessage(f *testing.F) {
	for _, v := range []version{{1, 2}, v14, v20} {
		create := batchItem(ttlv.OpCreate, append([]ttlv.Item{ttlv.Enum(ttlv.TagObjectType, ttlv.ObjectSymmetricKey)}, keyAttrs(v, 256, "fuzz")...)...)
		f.Add(ttlv.Marshal(requestMessage(v, create, batchItem(ttlv.OpActivate),
			batchItem(ttlv.OpEncrypt, ttlv.Bytes(ttlv.TagData, []byte("data"))),
			batchItem(ttlv.OpGet), batchItem(ttlv.OpGetAttributes), batchItem(ttlv.OpGetAttributeList),
			batchItem(ttlv.OpLocate, locateAttrs(v, ttlv.Enum(ttlv.TagState, ttlv.StateActive))...),
			batchItem(ttlv.OpRevoke, ttlv.Struct(ttlv.TagRevocationReason, ttlv.Enum(ttlv.TagRevocationReasonCode, 1))),
			batchItem(ttlv.OpDestroy))))
		f.Add(ttlv.Marshal(requestMessage(v, batchItem(ttlv.OpDiscoverVersions), batchItem(ttlv.OpQuery,
			ttlv.Enum(ttlv.TagQueryFunction, ttlv.QueryOperations)))))
		f.Add(ttlv.Marshal(requestMessage(v, create, batchItem(ttlv.OpActivate),
			batchItem(ttlv.OpEncrypt, cbcParams(), ttlv.Bytes(ttlv.TagData, []byte("data"))),
			batchItem(ttlv.OpDecrypt, cbcParams(), ttlv.Bytes(ttlv.TagData, make([]byte, 16)), ttlv.Bytes(ttlv.TagIVCounterNonce, make([]byte, 16))),
			batchItem(ttlv.OpDecrypt, gcmParams(), ttlv.Bytes(ttlv.TagData, make([]byte, 16)), ttlv.Bytes(ttlv.TagIVCounterNonce, make([]byte, 12)),
				ttlv.Bytes(ttlv.TagAuthenticatedEncryptionTag, make([]byte, 16))))))
		for _, seed := range attrSeeds(v, create) {
			f.Add(ttlv.Marshal(seed))
		}
		for _, seed := range opSeeds(v, create) {
			f.Add(ttlv.Marshal(seed.msg))
		}
	}
	files, _ := filepath.Glob(filepath.Join("ttlv", "testdata", "vectors", "*request.hex"))
	for _, file := range files {
		raw, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		it, err := parseVector(raw)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(ttlv.Marshal(it))
	}

	ca, err := pki.NewCA("fuzz CA", 0)
	if err != nil {
		f.Fatal(err)
	}
	cert, err := ca.IssueGateway("acme", "gateway-fuzz", pki.NodeOptions{})
	if err != nil {
		f.Fatal(err)
	}
	keys := kmiptest.NewKeys()
	defer keys.Close()
	srv, err := New(Config{
		ClientCAs: ca.Pool(), Certificate: cert.TLSCertificate(),
		MaxMessageSize: 1 << 16,
		Logger:         slog.New(slog.NewTextHandler(io.Discard, nil)),
	}, keys)
	if err != nil {
		f.Fatal(err)
	}
	defer srv.Close()
	id := pki.Identity{Kind: pki.KindService, Tenant: "fuzz", Service: "app"}
	sess := &session{id: id, owner: ownerKey(id), remote: "fuzz"}

	f.Fuzz(func(t *testing.T, b []byte) {
		if len(b) > srv.cfg.MaxMessageSize {
			return // ReadMessage refuses these before handleMessage
		}
		out := srv.handleMessage(context.Background(), sess, srv.log, b)
		resp, err := ttlv.Decode(out, ttlv.DefaultLimits())
		if err != nil {
			t.Fatalf("response does not decode: %v", err)
		}
		if resp.Tag != ttlv.TagResponseMessage {
			t.Fatal("not a Response Message")
		}
		items := resp.All(ttlv.TagBatchItem)
		hdr := resp.Child(ttlv.TagResponseHeader)
		if hdr == nil || hdr.Child(ttlv.TagBatchCount).Int != int64(len(items)) || len(items) == 0 {
			t.Fatal("batch count does not match")
		}
		for _, bi := range items {
			if bi.Child(ttlv.TagResultStatus) == nil {
				t.Fatal("batch item without Result Status")
			}
		}
	})
}

// opSeed is a request message of one operation, named for the committed corpus
// (testdata/fuzz/FuzzHandleMessage/op-<name>-v<version>).
type opSeed struct {
	name string
	msg  ttlv.Item
}

// opSeeds are one message per operation added for real clients (Add, Modify
// and Delete Attribute, Check, Get Attributes with names, Get Attribute List,
// and Encrypt and Decrypt with a client's nonce and IV Length in bytes), each
// after Create and Activate, in the encoding of v: a mutation of one of them
// reaches that operation's parser at once.
func opSeeds(v version, create ttlv.Item) []opSeed {
	items := attrSeeds(v, create)[0].All(ttlv.TagBatchItem)[2:] // after Create and Activate
	name := func(n string) ttlv.Item {
		return ttlv.Struct(ttlv.TagName, ttlv.Text(ttlv.TagNameValue, n), ttlv.Enum(ttlv.TagNameType, ttlv.NameUninterpretedText))
	}
	getNamed := batchItem(ttlv.OpGetAttributes, ttlv.Text(ttlv.TagAttributeName, "State"), ttlv.Text(ttlv.TagAttributeName, "Name"))
	if v.v2() {
		getNamed = batchItem(ttlv.OpGetAttributes, ttlv.Enum(ttlv.TagAttributeReference, uint32(ttlv.TagState)),
			ttlv.Struct(ttlv.TagAttributeReference, ttlv.Text(ttlv.TagVendorIdentification, ""), ttlv.Text(ttlv.TagAttributeName, "Name")))
	}
	var out []opSeed
	add := func(op string, it ttlv.Item) {
		out = append(out, opSeed{fmt.Sprintf("op-%s-v%d%d", op, v.major, v.minor), requestMessage(v, create, batchItem(ttlv.OpActivate), it)})
	}
	ops := map[uint32]string{ttlv.OpEncrypt: "encrypt-client-nonce", ttlv.OpDecrypt: "decrypt-client-nonce", ttlv.OpCheck: "check",
		ttlv.OpAddAttribute: "add-attribute", ttlv.OpModifyAttribute: "modify-attribute", ttlv.OpDeleteAttribute: "delete-attribute"}
	seen := map[string]bool{}
	for _, it := range items {
		op := ops[uint32(it.Child(ttlv.TagOperation).Int)]
		if op == "" || seen[op] {
			continue
		}
		seen[op] = true
		if op == "modify-attribute" || op == "delete-attribute" {
			// The instance they change must exist: an Add of it first (the 2.0 Delete names "c").
			n := "b"
			if op == "delete-attribute" && v.v2() {
				n = "c"
			}
			out = append(out, opSeed{fmt.Sprintf("op-%s-v%d%d", op, v.major, v.minor),
				requestMessage(v, create, batchItem(ttlv.OpActivate), addName(v, name(n)), *it)})
			continue
		}
		add(op, *it)
	}
	add("get-attributes-named", getNamed)
	add("get-attribute-list", batchItem(ttlv.OpGetAttributeList))
	return out
}

// addName is an Add Attribute of a Name in the encoding of v.
func addName(v version, n ttlv.Item) ttlv.Item {
	if v.v2() {
		return batchItem(ttlv.OpAddAttribute, ttlv.Struct(ttlv.TagNewAttribute, n))
	}
	n.Tag = ttlv.TagAttributeValue
	return batchItem(ttlv.OpAddAttribute, ttlv.Struct(ttlv.TagAttribute, ttlv.Text(ttlv.TagAttributeName, "Name"), n))
}

// attrSeeds are requests of the attribute operations, Check and GCM with a
// client's nonce, in the encoding of v, each after create (and Activate).
func attrSeeds(v version, create ttlv.Item) []ttlv.Item {
	name := func(n string) ttlv.Item {
		return ttlv.Struct(ttlv.TagName, ttlv.Text(ttlv.TagNameValue, n), ttlv.Enum(ttlv.TagNameType, ttlv.NameUninterpretedText))
	}
	v1 := func(attr string, index int32, value ttlv.Item) ttlv.Item {
		a := ttlv.Struct(ttlv.TagAttribute, ttlv.Text(ttlv.TagAttributeName, attr))
		if index >= 0 {
			a.Children = append(a.Children, ttlv.Int(ttlv.TagAttributeIndex, index))
		}
		value.Tag = ttlv.TagAttributeValue
		return ttlv.Struct(a.Tag, append(a.Children, value)...)
	}
	nonce := ttlv.Bytes(ttlv.TagIVCounterNonce, []byte("abcdefghijkl"))
	gcm12 := ttlv.Struct(ttlv.TagCryptographicParameters, ttlv.Enum(ttlv.TagBlockCipherMode, ttlv.ModeGCM), ttlv.Int(ttlv.TagIVLength, 12))
	items := []ttlv.Item{create, batchItem(ttlv.OpActivate),
		batchItem(ttlv.OpEncrypt, gcm12, nonce, ttlv.Bytes(ttlv.TagData, []byte("data"))),
		batchItem(ttlv.OpDecrypt, gcm12, nonce, ttlv.Bytes(ttlv.TagData, make([]byte, 48)), ttlv.Bytes(ttlv.TagAuthenticatedEncryptionTag, make([]byte, 16))),
		batchItem(ttlv.OpCheck, ttlv.Int(ttlv.TagCryptographicUsageMask, int32(ttlv.UsageEncrypt)),
			ttlv.Long(ttlv.TagUsageLimitsCount, 1), ttlv.Interval(ttlv.TagLeaseTime, 60))}
	if v.v2() {
		items = append(items,
			batchItem(ttlv.OpAddAttribute, ttlv.Struct(ttlv.TagNewAttribute, name("b"))),
			batchItem(ttlv.OpModifyAttribute, ttlv.Struct(ttlv.TagCurrentAttribute, name("b")), ttlv.Struct(ttlv.TagNewAttribute, name("c"))),
			batchItem(ttlv.OpDeleteAttribute, ttlv.Struct(ttlv.TagCurrentAttribute, name("c"))),
			batchItem(ttlv.OpAddAttribute, ttlv.Struct(ttlv.TagNewAttribute, ttlv.Text(ttlv.TagObjectGroup, "g"))),
			batchItem(ttlv.OpDeleteAttribute, ttlv.Enum(ttlv.TagAttributeReference, uint32(ttlv.TagObjectGroup))),
			batchItem(ttlv.OpDeleteAttribute, ttlv.Struct(ttlv.TagAttributeReference,
				ttlv.Text(ttlv.TagVendorIdentification, ""), ttlv.Text(ttlv.TagAttributeName, "Name"))))
	} else {
		items = append(items,
			batchItem(ttlv.OpAddAttribute, v1("Name", -1, name("b"))),
			batchItem(ttlv.OpModifyAttribute, v1("Name", 1, name("c"))),
			batchItem(ttlv.OpDeleteAttribute, ttlv.Text(ttlv.TagAttributeName, "Name"), ttlv.Int(ttlv.TagAttributeIndex, 1)),
			batchItem(ttlv.OpAddAttribute, v1("Cryptographic Parameters", -1, ttlv.Struct(0, ttlv.Enum(ttlv.TagBlockCipherMode, ttlv.ModeCBC)))),
			batchItem(ttlv.OpDeleteAttribute, ttlv.Text(ttlv.TagAttributeName, "Cryptographic Parameters")))
	}
	// With Continue, a refusal does not hide the items after it.
	msg := requestMessage(v, items...)
	hdr := msg.Child(ttlv.TagRequestHeader)
	hdr.Children = append(hdr.Children, ttlv.Enum(ttlv.TagBatchErrorContinuationOption, ttlv.BatchContinue))
	return []ttlv.Item{msg, requestMessage(v, create, batchItem(ttlv.OpCheck))}
}
