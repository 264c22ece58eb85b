package kmip

import (
	"context"
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
	for _, v := range []version{v14, v20} {
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
