package wrap

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata/vectors.json from the implementation")

const vectorsFile = "testdata/vectors.json"

// vector is one known answer. Hex fields are lowercase hex.
type vector struct {
	Name       string `json:"name"`
	Kind       string `json:"kind"`
	KDF        string `json:"kdf"`
	ParentID   string `json:"parent_id"`
	ParentKey  string `json:"parent_key"`
	SubjectID  string `json:"subject_id,omitempty"`
	Item       int    `json:"item"` // index in its batch: the nonce counter
	Salt       string `json:"salt"`
	Nonce      string `json:"nonce"`
	Context    string `json:"context"`
	Label      string `json:"label"`
	DerivedKey string `json:"derived_key"`
	AAD        string `json:"aad"`
	Plaintext  string `json:"plaintext"`
	Blob       string `json:"blob"`
}

type vectorFile struct {
	Comment string   `json:"comment"`
	Vectors []vector `json:"vectors"`
}

func unhex(t *testing.T, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// counterReader yields bytes 0x00, 0x01, ... from a start value: fixed salts.
type counterReader struct{ next byte }

func (r *counterReader) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = r.next
		r.next++
	}
	return len(p), nil
}

func kdfByName(t *testing.T, s string) KDF {
	for _, k := range kdfs {
		if k.String() == s {
			return k
		}
	}
	t.Fatalf("unknown KDF %q", s)
	return 0
}

// makeVectors builds the vectors with the implementation, from fixed keys
// and salts.
func makeVectors(t *testing.T) []vector {
	parentKey := func(seed byte) []byte {
		b := make([]byte, KeySize)
		for i := range b {
			b[i] = seed + byte(i)
		}
		return b
	}
	var vs []vector
	for _, kdf := range kdfs {
		for _, tc := range []struct {
			item int
			ctx  string
		}{{0, "bucket=invoices"}, {3, ""}} {
			pk := parentKey(0x10)
			l3 := serviceKeyWith(t, l3ID, bytes.Clone(pk))
			dks := make([]*DataKey, tc.item+1)
			for i := range dks {
				dks[i], _ = DataKeyFromBytes(parentKey(0xa0 + byte(i)))
			}
			ctxs := make([][]byte, len(dks))
			ctxs[tc.item] = []byte(tc.ctx)
			blobs, err := l3.wrapBatch(dks, ctxs, kdf, &counterReader{next: 0x40})
			if err != nil {
				t.Fatal(err)
			}
			vs = append(vs, vector{
				Name: "wrapped-data-key/" + kdf.String() + "/item" + string(rune('0'+tc.item)),
				Kind: KindWrappedDataKey.String(), KDF: kdf.String(),
				ParentID: l3ID.String(), ParentKey: hex.EncodeToString(pk),
				Item: tc.item, Context: hex.EncodeToString([]byte(tc.ctx)), Label: labelWrapDataKey,
				Plaintext: hex.EncodeToString(dks[tc.item].b[:]), Blob: hex.EncodeToString(blobs[tc.item]),
			})
		}
		pk := parentKey(0x20)
		l2, err := TenantKeyFromBytes(l2ID, bytes.Clone(pk))
		if err != nil {
			t.Fatal(err)
		}
		defer l2.Destroy()
		sk := parentKey(0x30)
		l3 := serviceKeyWith(t, l3ID, bytes.Clone(sk))
		salt, _ := saltFrom(&counterReader{next: 0x60})
		blob, err := l2.sealServiceKey(l3, kdf, &salt)
		if err != nil {
			t.Fatal(err)
		}
		vs = append(vs, vector{
			Name: "sealed-service-key/" + kdf.String(),
			Kind: KindSealedServiceKey.String(), KDF: kdf.String(),
			ParentID: l2ID.String(), ParentKey: hex.EncodeToString(pk), SubjectID: l3ID.String(),
			Label: labelSealServiceKey, Plaintext: hex.EncodeToString(sk), Blob: hex.EncodeToString(blob),
		})
	}
	// Fill in the informative fields (salt, nonce, derived key, AAD) by
	// hand, as docs/format.md describes, independently of the package.
	for i := range vs {
		v := &vs[i]
		blob := unhex(t, v.Blob)
		hdr := blob[:len(blob)-KeySize-TagSize]
		salt := hdr[len(hdr)-SaltSize-NonceSize : len(hdr)-NonceSize]
		v.Salt = hex.EncodeToString(salt)
		v.Nonce = hex.EncodeToString(hdr[len(hdr)-NonceSize:])
		v.DerivedKey = hex.EncodeToString(deriveByHand(t, v.KDF, unhex(t, v.ParentKey), v.Label, salt))
		ctx := unhex(t, v.Context)
		aad := binary.BigEndian.AppendUint32(bytes.Clone(hdr), uint32(len(ctx)))
		v.AAD = hex.EncodeToString(append(aad, ctx...))
	}
	return vs
}

// deriveByHand derives a one-time key with crypto/hmac and crypto/hkdf,
// not with the package's hand-written HMAC.
func deriveByHand(t *testing.T, kdf string, key []byte, label string, salt []byte) []byte {
	switch kdf {
	case "hkdf-sha256":
		k, err := hkdf.Key(sha256.New, key, salt, label, 32)
		if err != nil {
			t.Fatal(err)
		}
		return k
	case "sp800-108-ctr-hmac-sha256":
		m := hmac.New(sha256.New, key)
		m.Write([]byte{0, 0, 0, 1})
		m.Write([]byte(label))
		m.Write([]byte{0})
		m.Write(salt)
		m.Write([]byte{0, 0, 1, 0})
		return m.Sum(nil)
	}
	t.Fatalf("unknown KDF %q", kdf)
	return nil
}

func TestVectors(t *testing.T) {
	got := makeVectors(t)
	if *update {
		f := vectorFile{
			Comment: "Known-answer vectors for the wrap blob format, docs/format.md. Hex strings; " +
				"salt, nonce, label, derived_key and aad are informative (they can be computed from the others).",
			Vectors: got,
		}
		b, err := json.MarshalIndent(f, "", "  ")
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(vectorsFile, append(b, '\n'), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	b, err := os.ReadFile(vectorsFile)
	if err != nil {
		t.Fatal(err)
	}
	var f vectorFile
	if err := json.Unmarshal(b, &f); err != nil {
		t.Fatal(err)
	}
	if len(f.Vectors) != len(got) {
		t.Fatalf("%d vectors in %s, implementation makes %d", len(f.Vectors), vectorsFile, len(got))
	}
	for i, v := range f.Vectors {
		t.Run(v.Name, func(t *testing.T) {
			// Direction 1: the implementation, from the same key and
			// salt, makes exactly the stored blob.
			if got[i] != v {
				t.Fatalf("implementation makes\n%+v\nstored vector\n%+v", got[i], v)
			}
			// Direction 2: the stored blob opens to the stored
			// plaintext, through the public API.
			blob := unhex(t, v.Blob)
			h, err := ParseHeader(blob)
			if err != nil {
				t.Fatal(err)
			}
			if h.KDF.String() != v.KDF || h.Kind.String() != v.Kind || h.Parent.String() != v.ParentID {
				t.Fatalf("header %+v", h)
			}
			switch h.Kind {
			case KindWrappedDataKey:
				l3 := serviceKeyWith(t, h.Parent, unhex(t, v.ParentKey))
				dk, err := l3.Unwrap(blob, unhex(t, v.Context))
				if err != nil {
					t.Fatal(err)
				}
				if hex.EncodeToString(dk.b[:]) != v.Plaintext {
					t.Fatal("unwrapped plaintext differs")
				}
			case KindSealedServiceKey:
				l2, err := TenantKeyFromBytes(h.Parent, unhex(t, v.ParentKey))
				if err != nil {
					t.Fatal(err)
				}
				defer l2.Destroy()
				sid, err := ParseKeyID(v.SubjectID)
				if err != nil {
					t.Fatal(err)
				}
				l3, err := l2.OpenServiceKey(sid, blob)
				if err != nil {
					t.Fatal(err)
				}
				defer l3.Destroy()
				want := serviceKeyWith(t, sid, unhex(t, v.Plaintext))
				if !l3.Equal(want) {
					t.Fatal("opened service key differs")
				}
			}
			// Direction 3: by hand, with the standard library only, as
			// docs/format.md tells a reader to.
			pt := openByHand(t, v)
			if hex.EncodeToString(pt) != v.Plaintext {
				t.Fatal("opened by hand, plaintext differs")
			}
			kdfByName(t, v.KDF)
		})
	}
}

// openByHand follows docs/format.md step by step.
func openByHand(t *testing.T, v vector) []byte {
	blob := unhex(t, v.Blob)
	// Step 1: the last 48 bytes are ciphertext and tag; the rest is the
	// header, whose last 44 bytes are salt and nonce.
	ct := blob[len(blob)-48:]
	hdr := blob[:len(blob)-48]
	salt := hdr[len(hdr)-44 : len(hdr)-12]
	nonce := hdr[len(hdr)-12:]
	// Step 2: derive.
	k := deriveByHand(t, v.KDF, unhex(t, v.ParentKey), v.Label, salt)
	if hex.EncodeToString(k) != v.DerivedKey {
		t.Fatal("derived key differs")
	}
	// Step 3: AAD = header || uint32_be(len(context)) || context.
	ctx := unhex(t, v.Context)
	aad := binary.BigEndian.AppendUint32(bytes.Clone(hdr), uint32(len(ctx)))
	aad = append(aad, ctx...)
	if hex.EncodeToString(aad) != v.AAD {
		t.Fatal("AAD differs")
	}
	// Step 4: AES-256-GCM open.
	block, err := aes.NewCipher(k)
	if err != nil {
		t.Fatal(err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	pt, err := gcm.Open(nil, nonce, ct, aad)
	if err != nil {
		t.Fatal(err)
	}
	return pt
}
