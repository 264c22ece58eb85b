package ttlv_test

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"runtime"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/kryptonkms/krypton/gateway/kmip/ttlv"
)

func mustHex(s string) []byte {
	b, err := hex.DecodeString(strings.NewReplacer(" ", "", "|", "").Replace(s))
	if err != nil {
		panic(err)
	}
	return b
}

// TestDecodeStrict feeds inputs that each break one rule.
func TestDecodeStrict(t *testing.T) {
	cases := []struct {
		name, hex string
		want      error
	}{
		{"empty", "", ttlv.ErrMalformed},
		{"short header", "42 00 20 02 00 00 00", ttlv.ErrMalformed},
		{"truncated value", "42 00 20 | 02 | 00 00 00 04 | 00 00 00 08", ttlv.ErrMalformed},
		{"integer length 8", "42 00 20 | 02 | 00 00 00 08 | 00 00 00 08 00 00 00 00", ttlv.ErrMalformed},
		{"nonzero padding", "42 00 20 | 02 | 00 00 00 04 | 00 00 00 08 00 00 00 01", ttlv.ErrMalformed},
		{"text padding", "42 00 20 | 07 | 00 00 00 01 | 41 00 00 00 00 00 00 01", ttlv.ErrMalformed},
		{"bool 2", "42 00 20 | 06 | 00 00 00 08 | 00 00 00 00 00 00 00 02", ttlv.ErrMalformed},
		{"long length 4", "42 00 20 | 03 | 00 00 00 04 | 00 00 00 01 00 00 00 00", ttlv.ErrMalformed},
		{"big integer length 4", "42 00 20 | 04 | 00 00 00 04 | 00 00 00 01 00 00 00 00", ttlv.ErrMalformed},
		{"unknown type", "42 00 20 | 0C | 00 00 00 04 | 00 00 00 01 00 00 00 00", ttlv.ErrMalformed},
		{"tag out of range", "43 00 20 | 02 | 00 00 00 04 | 00 00 00 08 00 00 00 00", ttlv.ErrMalformed},
		{"invalid utf8", "42 00 20 | 07 | 00 00 00 02 | C3 28 00 00 00 00 00 00", ttlv.ErrMalformed},
		{"trailing bytes", "42 00 20 | 02 | 00 00 00 04 | 00 00 00 08 00 00 00 00 | 00", ttlv.ErrMalformed},
		{"structure length not /8", "42 00 20 | 01 | 00 00 00 04 | 00 00 00 00 00 00 00 00", ttlv.ErrMalformed},
		{"child overruns structure", "42 00 20 | 01 | 00 00 00 08 | 42 00 04 | 02 | 00 00 00 04 | 00 00 00 01 00 00 00 00", ttlv.ErrMalformed},
		{"huge length", "42 00 20 | 08 | FF FF FF FF | 00 00 00 00 00 00 00 00", ttlv.ErrMalformed},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := ttlv.Decode(mustHex(c.hex), ttlv.DefaultLimits())
			if !errors.Is(err, c.want) {
				t.Fatalf("err = %v, want %v", err, c.want)
			}
			var de *ttlv.DecodeError
			if !errors.As(err, &de) {
				t.Fatalf("not a DecodeError: %T", err)
			}
		})
	}
}

func nested(depth int) ttlv.Item {
	it := ttlv.Int(0x420005, 1)
	for range depth {
		it = ttlv.Struct(0x420004, it)
	}
	return it
}

func TestDecodeLimits(t *testing.T) {
	lim := ttlv.Limits{MaxSize: 1 << 20, MaxDepth: 4, MaxItems: 10}
	if _, err := ttlv.Decode(ttlv.Marshal(nested(4)), lim); err != nil {
		t.Fatalf("depth 4: %v", err)
	}
	if _, err := ttlv.Decode(ttlv.Marshal(nested(5)), lim); !errors.Is(err, ttlv.ErrTooDeep) {
		t.Fatalf("depth 5: %v", err)
	}
	var many []ttlv.Item
	for range 10 {
		many = append(many, ttlv.Int(0x420005, 1))
	}
	if _, err := ttlv.Decode(ttlv.Marshal(ttlv.Struct(0x420004, many...)), lim); !errors.Is(err, ttlv.ErrTooLarge) {
		t.Fatalf("11 items: %v", err)
	}
	big := ttlv.Marshal(ttlv.Bytes(0x420004, make([]byte, 100)))
	if _, err := ttlv.Decode(big, ttlv.Limits{MaxSize: 64}); !errors.Is(err, ttlv.ErrTooLarge) {
		t.Fatalf("size: %v", err)
	}
}

func TestDecodeCopies(t *testing.T) {
	b := ttlv.Marshal(ttlv.Bytes(0x420004, []byte{1, 2, 3}))
	it, err := ttlv.Decode(b, ttlv.DefaultLimits())
	if err != nil {
		t.Fatal(err)
	}
	clear(b)
	if !bytes.Equal(it.Bytes, []byte{1, 2, 3}) {
		t.Fatal("decoded bytes alias the input")
	}
}

func TestDecodeErrorDoesNotEcho(t *testing.T) {
	_, err := ttlv.Decode(mustHex("42 00 20 | 07 | 00 00 00 05 | 53 45 43 52 45 54 00 00"), ttlv.DefaultLimits())
	if err == nil || strings.Contains(err.Error(), "SECRE") || strings.Contains(err.Error(), "5345") {
		t.Fatalf("err = %v", err)
	}
}

func TestReadMessage(t *testing.T) {
	msg := ttlv.Marshal(ttlv.Struct(ttlv.TagRequestMessage, ttlv.Int(0x420005, 7)))
	var stream bytes.Buffer
	stream.Write(msg)
	stream.Write(msg)
	for range 2 {
		got, err := ttlv.ReadMessage(&stream, 1024)
		if err != nil || !bytes.Equal(got, msg) {
			t.Fatalf("ReadMessage = %X, %v", got, err)
		}
	}
	if _, err := ttlv.ReadMessage(&stream, 1024); err != io.EOF {
		t.Fatalf("at end: %v", err)
	}
	if _, err := ttlv.ReadMessage(bytes.NewReader(msg), 16); !errors.Is(err, ttlv.ErrTooLarge) {
		t.Fatalf("too large: %v", err)
	}
	notStruct := ttlv.Marshal(ttlv.Int(ttlv.TagRequestMessage, 1))
	if _, err := ttlv.ReadMessage(bytes.NewReader(notStruct), 1024); !errors.Is(err, ttlv.ErrMalformed) {
		t.Fatalf("not a structure: %v", err)
	}
	if _, err := ttlv.ReadMessage(bytes.NewReader(msg[:12]), 1024); err != io.ErrUnexpectedEOF {
		t.Fatalf("truncated: %v", err)
	}
}

// TestReadMessageGrowsWithData: a header that declares a large length, followed by few bytes,
// makes ReadMessage allocate about what arrived, not the declared size (a client pinned 1 MiB
// per connection that way), and a large message that does arrive whole is read intact, in
// small reads.
func TestReadMessageGrowsWithData(t *testing.T) {
	const declared = 64<<20 - 8
	hdr := []byte{0x42, 0x00, 0x78, byte(ttlv.TypeStructure), 0, 0, 0, 0}
	binary.BigEndian.PutUint32(hdr[4:], declared)
	stream := append(hdr, make([]byte, 1000)...)
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err := ttlv.ReadMessage(bytes.NewReader(stream), 64<<20)
	runtime.ReadMemStats(&after)
	if err != io.ErrUnexpectedEOF {
		t.Fatalf("truncated message: %v", err)
	}
	if got := after.TotalAlloc - before.TotalAlloc; got > 1<<20 {
		t.Fatalf("ReadMessage allocated %d bytes for a message of 1000 bytes declaring %d", got, declared)
	}

	var items []ttlv.Item
	for i := range 3000 {
		items = append(items, ttlv.Bytes(0x420005, bytes.Repeat([]byte{byte(i)}, 40)))
	}
	msg := ttlv.Marshal(ttlv.Struct(ttlv.TagRequestMessage, items...))
	got, err := ttlv.ReadMessage(iotest.HalfReader(bytes.NewReader(msg)), len(msg))
	if err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("ReadMessage of %d bytes in small reads: equal %v, %v", len(msg), bytes.Equal(got, msg), err)
	}
}
