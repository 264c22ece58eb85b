package ttlv_test

import (
	"bytes"
	"testing"

	"github.com/kryptonkms/krypton/gateway/kmip/ttlv"
)

// TestRegisterRekeyEncoding checks, byte for byte, the tags and
// enumerations Register and Re-key use (KMIP 1.4 sections 9.1.3.1 and
// 9.1.3.2.20): a Replaced Object Link, the Re-key operation and an Offset.
func TestRegisterRekeyEncoding(t *testing.T) {
	cases := []struct {
		name string
		item ttlv.Item
		hex  string
	}{
		{"link", ttlv.Struct(ttlv.TagLink,
			ttlv.Enum(ttlv.TagLinkType, ttlv.LinkReplacedObject),
			ttlv.Text(ttlv.TagLinkedObjectIdentifier, "1")),
			"42 00 4A | 01 | 00 00 00 20 |" +
				"42 00 4B | 05 | 00 00 00 04 | 00 00 01 07 00 00 00 00 |" +
				"42 00 4C | 07 | 00 00 00 01 | 31 00 00 00 00 00 00 00"},
		{"replacement link type", ttlv.Enum(ttlv.TagLinkType, ttlv.LinkReplacementObject),
			"42 00 4B | 05 | 00 00 00 04 | 00 00 01 06 00 00 00 00"},
		{"re-key", ttlv.Enum(ttlv.TagOperation, ttlv.OpRekey),
			"42 00 5C | 05 | 00 00 00 04 | 00 00 00 04 00 00 00 00"},
		{"register", ttlv.Enum(ttlv.TagOperation, ttlv.OpRegister),
			"42 00 5C | 05 | 00 00 00 04 | 00 00 00 03 00 00 00 00"},
		{"key wrapping data", ttlv.Struct(ttlv.TagKeyWrappingData),
			"42 00 46 | 01 | 00 00 00 00"},
		{"offset", ttlv.Interval(ttlv.TagOffset, 1),
			"42 00 58 | 0A | 00 00 00 04 | 00 00 00 01 00 00 00 00"},
	}
	for _, c := range cases {
		want := mustHex(c.hex)
		got := ttlv.Marshal(c.item)
		if !bytes.Equal(got, want) {
			t.Errorf("%s: encoded % X, want % X", c.name, got, want)
			continue
		}
		back, err := ttlv.Decode(want, ttlv.DefaultLimits())
		if err != nil {
			t.Errorf("%s: %v", c.name, err)
			continue
		}
		if !bytes.Equal(ttlv.Marshal(back), want) {
			t.Errorf("%s: does not round-trip", c.name)
		}
	}
}
