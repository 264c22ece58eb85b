package ttlv_test

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/kryptonkms/krypton/gateway/kmip/ttlv"
)

// FuzzDecode checks that Decode never panics and that whatever it accepts
// is canonical: encoding the decoded item gives back the input exactly
// (strict lengths and zero padding leave no second encoding of one tree).
// The committed corpus is in testdata/fuzz/FuzzDecode; the published
// vectors are added as seeds too.
func FuzzDecode(f *testing.F) {
	files, _ := filepath.Glob(filepath.Join("testdata", "vectors", "*.hex"))
	for _, file := range files {
		b, err := parseVector(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	lim := ttlv.Limits{MaxSize: 1 << 16, MaxDepth: 16, MaxItems: 4096}
	f.Fuzz(func(t *testing.T, b []byte) {
		it, err := ttlv.Decode(b, lim)
		if err != nil {
			return
		}
		if got := ttlv.Marshal(it); !bytes.Equal(got, b) {
			t.Fatalf("accepted input is not canonical:\n in %X\nout %X", b, got)
		}
	})
}
