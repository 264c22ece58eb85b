package kmip

import (
	"bytes"
	"encoding/hex"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/kryptonkms/krypton/gateway/kmip/ttlv"
)

func decodeVector(t *testing.T, raw []byte) ttlv.Item {
	t.Helper()
	it, err := parseVector(raw)
	if err != nil {
		t.Fatal(err)
	}
	return it
}

// parseVector decodes a ttlv/testdata/vectors file.
func parseVector(raw []byte) (ttlv.Item, error) {
	var h strings.Builder
	for _, line := range strings.Split(string(raw), "\n") {
		if !strings.HasPrefix(line, "#") {
			h.WriteString(strings.TrimSpace(line))
		}
	}
	b, err := hex.DecodeString(h.String())
	if err != nil {
		return ttlv.Item{}, err
	}
	return ttlv.Decode(b, ttlv.DefaultLimits())
}

// TestDiscoverVersions answers the 1.1 test case's request (any version
// may ask) with the versions this server speaks.
func TestDiscoverVersions(t *testing.T) {
	e := newEnv(t, nil)
	c := e.dial("acme", "db")
	raw, err := os.ReadFile(filepath.Join("ttlv", "testdata", "vectors", "tc11-16.1-discover-versions-request.hex"))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := c.roundTrip(ttlv.Marshal(decodeVector(t, raw)))
	if err != nil {
		t.Fatal(err)
	}
	p := resp.Child(ttlv.TagBatchItem).Child(ttlv.TagResponsePayload)
	var got []version
	for _, pv := range p.All(ttlv.TagProtocolVersion) {
		v, _ := parseVersion(pv)
		got = append(got, v)
	}
	if !slices.Equal(got, supportedVersions) {
		t.Fatalf("versions %v", got)
	}
	// The client's list narrows the answer; 1.1 is not spoken.
	p2 := c.ok(v20, ttlv.OpDiscoverVersions, version{1, 1}.item(), v14.item())
	if vs := p2.All(ttlv.TagProtocolVersion); len(vs) != 1 {
		t.Fatalf("narrowed to %d versions", len(vs))
	}
	// Another operation in an unsupported version is refused.
	c.failure(version{1, 1}, ttlv.ReasonInvalidMessage, ttlv.OpLocate)
	c.failure(version{3, 0}, ttlv.ReasonInvalidMessage, ttlv.OpLocate)
	q := c.ok(v14, ttlv.OpQuery, ttlv.Enum(ttlv.TagQueryFunction, ttlv.QueryOperations), ttlv.Enum(ttlv.TagQueryFunction, ttlv.QueryServerInfo))
	if len(q.All(ttlv.TagOperation)) != len(handlers) || q.Child(ttlv.TagVendorIdentification) == nil {
		t.Fatal("query")
	}
}

// TestBatch: Create and Activate in one message through the ID
// Placeholder; Stop and Continue on error.
func TestBatch(t *testing.T) {
	e := newEnv(t, nil)
	c := e.dial("acme", "db")
	for _, v := range []version{v14, v20} {
		items := c.send(v,
			batchItem(ttlv.OpCreate, append([]ttlv.Item{ttlv.Enum(ttlv.TagObjectType, ttlv.ObjectSymmetricKey)}, keyAttrs(v, 256, "")...)...),
			batchItem(ttlv.OpActivate),
			batchItem(ttlv.OpGetAttributes, ttlv.Text(ttlv.TagAttributeName, "State")))
		if len(items) != 3 {
			t.Fatalf("%d items", len(items))
		}
		for _, it := range items {
			if d := describeFailure(it); d != "success" {
				t.Fatalf("batch: %s", d)
			}
		}
		st := attrsOf(t, v, *items[2].Child(ttlv.TagResponsePayload))
		if v.v2() {
			// 2.0 names attributes by reference: the Attribute Name above is
			// a 1.x form, which the server accepts in any version.
			if st[ttlv.TagState][0].Int != int64(ttlv.StateActive) {
				t.Fatal("placeholder state")
			}
		} else if st[ttlv.TagState][0].Int != int64(ttlv.StateActive) {
			t.Fatal("placeholder state")
		}
	}
	// Stop (the default): nothing after the failure is processed.
	items := c.send(v14, batchItem(ttlv.OpGet, uidItem("missing")), batchItem(ttlv.OpLocate))
	if len(items) != 1 {
		t.Fatalf("stop: %d items", len(items))
	}
	checkFailure(t, items[0], ttlv.ReasonItemNotFound)
	// Continue.
	msg := requestMessage(v14, batchItem(ttlv.OpGet, uidItem("missing")), batchItem(ttlv.OpLocate))
	hdr := msg.Child(ttlv.TagRequestHeader)
	hdr.Children = append(hdr.Children, ttlv.Enum(ttlv.TagBatchErrorContinuationOption, ttlv.BatchContinue))
	resp, err := c.roundTrip(ttlv.Marshal(msg))
	if err != nil {
		t.Fatal(err)
	}
	bis := resp.All(ttlv.TagBatchItem)
	if len(bis) != 2 || describeFailure(*bis[1]) != "success" {
		t.Fatalf("continue: %d items", len(bis))
	}
	// A missing placeholder is an Invalid Field.
	c.failure(v14, ttlv.ReasonInvalidField, ttlv.OpActivate)

	// Unique Batch Item IDs are echoed, also when Maximum Response Size
	// turns every item into Response Too Large.
	for _, max := range []int32{0, 64} {
		item := batchItem(ttlv.OpDiscoverVersions)
		item.Children = append(item.Children[:1], append([]ttlv.Item{ttlv.Bytes(ttlv.TagUniqueBatchItemID, []byte{7, 7})}, item.Children[1:]...)...)
		msg := requestMessage(v14, item)
		if max > 0 {
			hdr := msg.Child(ttlv.TagRequestHeader)
			hdr.Children = append(hdr.Children, ttlv.Int(ttlv.TagMaximumResponseSize, max))
		}
		resp, err := c.roundTrip(ttlv.Marshal(msg))
		if err != nil {
			t.Fatal(err)
		}
		bi := resp.Child(ttlv.TagBatchItem)
		if id := bi.Child(ttlv.TagUniqueBatchItemID); id == nil || !bytes.Equal(id.Bytes, []byte{7, 7}) {
			t.Fatalf("max %d: batch item id not echoed", max)
		}
		if max > 0 {
			checkFailure(t, *bi, ttlv.ReasonResponseTooLarge)
		} else if describeFailure(*bi) != "success" {
			t.Fatal(describeFailure(*bi))
		}
	}
}

// TestMalformed: bad TTLV gets a KMIP error and never a crash; when the
// framing is sound the connection stays usable, when it is not, or the
// message is too large, the server answers and closes.
func TestMalformed(t *testing.T) {
	e := newEnv(t, func(c *Config) { c.MaxMessageSize = 4096 })
	c := e.dial("acme", "db")
	bad := [][]byte{
		// Framing is fine, the content is not: a child overruns.
		ttlv.Marshal(ttlv.Struct(ttlv.TagRequestMessage, ttlv.Bytes(ttlv.TagRequestHeader, make([]byte, 16)))),
		// A structure without a header.
		ttlv.Marshal(ttlv.Struct(ttlv.TagRequestMessage, batchItem(ttlv.OpLocate))),
		// Batch count wrong.
		ttlv.Marshal(ttlv.Struct(ttlv.TagRequestMessage,
			ttlv.Struct(ttlv.TagRequestHeader, v14.item(), ttlv.Int(ttlv.TagBatchCount, 2)), batchItem(ttlv.OpLocate))),
		// A response message sent as a request.
		ttlv.Marshal(ttlv.Struct(ttlv.TagResponseMessage)),
	}
	// Corrupt padding inside an otherwise valid request.
	good := ttlv.Marshal(requestMessage(v14, batchItem(ttlv.OpLocate, ttlv.Text(ttlv.TagUniqueIdentifier, "abc"))))
	corrupt := append([]byte{}, good...)
	corrupt[len(corrupt)-1] = 0xFF
	bad = append(bad, corrupt)
	for i, b := range bad {
		resp, err := c.roundTrip(b)
		if err != nil {
			t.Fatalf("case %d: %v", i, err)
		}
		checkFailure(t, *resp.Child(ttlv.TagBatchItem), ttlv.ReasonInvalidMessage)
	}
	c.ok(v14, ttlv.OpLocate) // still usable

	// Bad framing: answered, then closed.
	c2 := e.dial("acme", "db")
	resp, err := c2.roundTrip([]byte{0x42, 0x00, 0x78, 0x02, 0, 0, 0, 4, 0, 0, 0, 1, 0, 0, 0, 0})
	if err != nil {
		t.Fatal(err)
	}
	checkFailure(t, *resp.Child(ttlv.TagBatchItem), ttlv.ReasonInvalidMessage)
	if !c2.closedByServer() {
		t.Fatal("connection not closed after bad framing")
	}
	// Too large: refused before the body is read.
	c3 := e.dial("acme", "db")
	huge := ttlv.Marshal(requestMessage(v14, batchItem(ttlv.OpEncrypt, ttlv.Bytes(ttlv.TagData, make([]byte, 8192)))))
	resp, err = c3.roundTrip(huge[:64])
	if err != nil {
		t.Fatal(err)
	}
	checkFailure(t, *resp.Child(ttlv.TagBatchItem), ttlv.ReasonInvalidMessage)
	if !c3.closedByServer() {
		t.Fatal("connection not closed after an oversized message")
	}
	if n := testutil.ToFloat64(e.srv.metrics.rejected.WithLabelValues("too_large")); n != 1 {
		t.Fatalf("too_large = %v", n)
	}
}
