package ttlv_test

import (
	"bytes"
	"encoding/hex"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kryptonkms/krypton/gateway/kmip/ttlv"
)

// readVector reads a testdata/vectors file: '#' lines name the source, the
// rest is hex with optional spaces and '|'.
func readVector(t *testing.T, path string) []byte {
	t.Helper()
	b, err := parseVector(path)
	if err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return b
}

func parseVector(path string) ([]byte, error) {
	raw, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var h strings.Builder
	for _, line := range strings.Split(string(raw), "\n") {
		if strings.HasPrefix(line, "#") {
			continue
		}
		for _, r := range line {
			if r != ' ' && r != '|' && r != '\t' && r != '\r' {
				h.WriteRune(r)
			}
		}
	}
	return hex.DecodeString(h.String())
}

func vector(t *testing.T, name string) ttlv.Item {
	t.Helper()
	b := readVector(t, filepath.Join("testdata", "vectors", name+".hex"))
	it, err := ttlv.Decode(b, ttlv.DefaultLimits())
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return it
}

// TestVectorsRoundTrip decodes every published encoding and encodes it
// again: the bytes must come back exactly, which checks lengths, padding and
// nesting both ways.
func TestVectorsRoundTrip(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "vectors", "*.hex"))
	if err != nil || len(files) < 20 {
		t.Fatalf("vectors: %d files, %v", len(files), err)
	}
	for _, f := range files {
		t.Run(strings.TrimSuffix(filepath.Base(f), ".hex"), func(t *testing.T) {
			b := readVector(t, f)
			it, err := ttlv.Decode(b, ttlv.DefaultLimits())
			if err != nil {
				t.Fatal(err)
			}
			if got := ttlv.Marshal(it); !bytes.Equal(got, b) {
				t.Fatalf("re-encoding differs:\n got %X\nwant %X", got, b)
			}
			if ttlv.Size(it) != len(b) {
				t.Fatalf("Size = %d, want %d", ttlv.Size(it), len(b))
			}
		})
	}
}

// TestSpecPrimitives checks the decoded values of the specification's
// examples of each type, and that the constructors encode them to the same
// bytes.
func TestSpecPrimitives(t *testing.T) {
	const tag = ttlv.TagCompromiseDate // 0x420020, the examples' tag
	bigWant, _ := new(big.Int).SetString("1234567890000000000000000000", 10)
	date := time.Date(2008, time.March, 14, 11, 56, 40, 0, time.UTC)
	cases := []struct {
		name  string
		build ttlv.Item
		check func(ttlv.Item) bool
	}{
		{"spec-integer", ttlv.Int(tag, 8), func(it ttlv.Item) bool { return it.Type == ttlv.TypeInteger && it.Int == 8 }},
		{"spec-long-integer", ttlv.Long(tag, 123456789000000000), func(it ttlv.Item) bool { return it.Int == 123456789000000000 }},
		{"spec-big-integer", ttlv.Item{Tag: tag, Type: ttlv.TypeBigInteger, Bytes: bigWant.FillBytes(make([]byte, 16))},
			func(it ttlv.Item) bool { return new(big.Int).SetBytes(it.Bytes).Cmp(bigWant) == 0 }},
		{"spec-enumeration", ttlv.Enum(tag, 255), func(it ttlv.Item) bool { return it.Type == ttlv.TypeEnumeration && it.Int == 255 }},
		{"spec-boolean", ttlv.Bool(tag, true), func(it ttlv.Item) bool { return it.Type == ttlv.TypeBoolean && it.Int == 1 }},
		{"spec-text-string", ttlv.Text(tag, "Hello World"), func(it ttlv.Item) bool { return it.Text() == "Hello World" }},
		{"spec-byte-string", ttlv.Bytes(tag, []byte{1, 2, 3}), func(it ttlv.Item) bool { return bytes.Equal(it.Bytes, []byte{1, 2, 3}) }},
		{"spec-date-time", ttlv.DateTime(tag, date), func(it ttlv.Item) bool { return it.Time().Equal(date) }},
		{"spec-interval", ttlv.Interval(tag, 10*24*3600), func(it ttlv.Item) bool { return it.Int == 864000 }},
		{"spec-structure", ttlv.Struct(tag, ttlv.Enum(0x420004, 254), ttlv.Int(0x420005, 255)),
			func(it ttlv.Item) bool {
				return len(it.Children) == 2 && it.Child(0x420004).Int == 254 && it.Child(0x420005).Int == 255
			}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := readVector(t, filepath.Join("testdata", "vectors", c.name+".hex"))
			it, err := ttlv.Decode(b, ttlv.DefaultLimits())
			if err != nil {
				t.Fatal(err)
			}
			if it.Tag != tag || !c.check(it) {
				t.Fatalf("decoded %+v", it)
			}
			if got := ttlv.Marshal(c.build); !bytes.Equal(got, b) {
				t.Fatalf("constructor encodes %X, want %X", got, b)
			}
		})
	}
}

// TestUseCaseMessages reads fields out of the use-case messages, as the
// server does.
func TestUseCaseMessages(t *testing.T) {
	req := vector(t, "uc10-3.1.1-create-request")
	if req.Tag != ttlv.TagRequestMessage {
		t.Fatalf("tag %v", req.Tag)
	}
	hdr := req.Child(ttlv.TagRequestHeader)
	pv := hdr.Child(ttlv.TagProtocolVersion)
	if pv.Child(ttlv.TagProtocolVersionMajor).Int != 1 || pv.Child(ttlv.TagProtocolVersionMinor).Int != 0 {
		t.Fatal("protocol version")
	}
	if hdr.Child(ttlv.TagBatchCount).Int != 1 {
		t.Fatal("batch count")
	}
	bi := req.Child(ttlv.TagBatchItem)
	if bi.Child(ttlv.TagOperation).Int != int64(ttlv.OpCreate) {
		t.Fatal("operation")
	}
	ta := bi.Child(ttlv.TagRequestPayload).Child(ttlv.TagTemplateAttribute)
	attrs := ta.All(ttlv.TagAttribute)
	if len(attrs) != 3 || attrs[0].Child(ttlv.TagAttributeName).Text() != "Cryptographic Algorithm" ||
		attrs[0].Child(ttlv.TagAttributeValue).Int != int64(ttlv.AlgorithmAES) ||
		attrs[1].Child(ttlv.TagAttributeValue).Int != 128 ||
		attrs[2].Child(ttlv.TagAttributeValue).Int != int64(ttlv.UsageEncrypt|ttlv.UsageDecrypt) {
		t.Fatalf("attributes: %+v", attrs)
	}

	resp := vector(t, "uc10-4.1-get-response")
	payload := resp.Child(ttlv.TagBatchItem).Child(ttlv.TagResponsePayload)
	if payload.Child(ttlv.TagUniqueIdentifier).Text() != "21d28b8a-06df-43c0-b72f-2a161633ada9" {
		t.Fatal("unique identifier")
	}
	kb := payload.Child(ttlv.TagSymmetricKey).Child(ttlv.TagKeyBlock)
	km := kb.Child(ttlv.TagKeyValue).Child(ttlv.TagKeyMaterial)
	if hex.EncodeToString(km.Bytes) != "ef7833ab15f5a1ee5874bc0d9bbc4be7" {
		t.Fatal("key material")
	}
	if ts := resp.Child(ttlv.TagResponseHeader).Child(ttlv.TagTimeStamp).Time(); ts.Unix() != 0x4AFBED2B {
		t.Fatalf("time stamp %v", ts)
	}

	rev := vector(t, "uc10-4.1-revoke-request").Child(ttlv.TagBatchItem).Child(ttlv.TagRequestPayload)
	if rev.Child(ttlv.TagRevocationReason).Child(ttlv.TagRevocationReasonCode).Int != int64(ttlv.RevocationKeyCompromise) ||
		rev.Child(ttlv.TagCompromiseOccurrenceDate).Int != 6 {
		t.Fatal("revoke payload")
	}
}
