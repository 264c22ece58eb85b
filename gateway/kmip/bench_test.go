package kmip

import (
	"io"
	"log/slog"
	"testing"

	"github.com/kryptonkms/krypton/gateway/kmip/ttlv"
)

// BenchmarkEncrypt measures one KMIP Encrypt (AES-256-GCM, 64 bytes) over
// TLS on loopback, through one connection, with in-process Keys (no region
// round trip): the front end's own cost per operation.
//
//	go test -run '^$' -bench . -benchtime 3s ./gateway/kmip
func BenchmarkEncrypt(b *testing.B) {
	e := newEnv(b, func(c *Config) { c.Logger = slog.New(slog.NewTextHandler(io.Discard, nil)) })
	c := e.dial("acme", "bench")
	id := c.create(v14, "")
	c.ok(v14, ttlv.OpActivate, uidItem(id))
	req := ttlv.Marshal(requestMessage(v14, batchItem(ttlv.OpEncrypt, uidItem(id), gcmParams(), ttlv.Bytes(ttlv.TagData, make([]byte, 64)))))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := c.roundTrip(req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDecodeRequest measures decoding a typical request (the KMIP 1.0
// use case's Create) with the strict decoder.
func BenchmarkDecodeRequest(b *testing.B) {
	msg := ttlv.Marshal(requestMessage(v14, batchItem(ttlv.OpCreate,
		append([]ttlv.Item{ttlv.Enum(ttlv.TagObjectType, ttlv.ObjectSymmetricKey)}, keyAttrs(v14, 256, "bench")...)...)))
	b.SetBytes(int64(len(msg)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := ttlv.Decode(msg, ttlv.DefaultLimits()); err != nil {
			b.Fatal(err)
		}
	}
}
