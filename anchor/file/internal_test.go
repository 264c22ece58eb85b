package file

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/fips140"
	"crypto/hkdf"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/kryptonkms/krypton/anchor"
	"github.com/kryptonkms/krypton/anchor/anchortest"
)

// logBuf collects log records so tests can count WARNs.
type logBuf struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuf) Write(b []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(b)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

func openAt(t *testing.T, path string, create bool, lb *logBuf) (*Provider, error) {
	t.Helper()
	log := anchortest.Logger(t)
	if lb != nil {
		log = slog.New(slog.NewTextHandler(lb, nil))
	}
	p, err := Open(context.Background(), &anchor.FileURI{Path: path}, anchor.Options{Create: create, Development: true, Logger: log})
	if err == nil {
		t.Cleanup(func() { p.Close() })
	}
	return p, err
}

var (
	ac      = anchor.Context{Region: "dev", Tenant: "acme", Version: 1}
	discard = slog.New(slog.DiscardHandler)
)

func TestCreatePermissions(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "a", "b")
	path := filepath.Join(dir, "root.key")
	if _, err := openAt(t, path, true, nil); err != nil {
		t.Fatal(err)
	}
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 || st.Size() != int64(keyFileSize) {
		t.Errorf("key file mode %v size %d, want 0600 and %d", st.Mode().Perm(), st.Size(), keyFileSize)
	}
	dst, err := os.Stat(dir)
	if err != nil {
		t.Fatal(err)
	}
	if dst.Mode().Perm() != 0o700 {
		t.Errorf("directory mode %v, want 0700", dst.Mode().Perm())
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Errorf("directory holds %d entries, want only the key file (no temp files left)", len(ents))
	}
}

func TestCreateKeepsExistingKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "root.key")
	p, err := openAt(t, path, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := p.Seal(context.Background(), []byte("0123456789abcdef0123456789abcdef"), ac)
	if err != nil {
		t.Fatal(err)
	}
	// Asking to create again must not replace the key.
	q, err := openAt(t, path, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := q.Unseal(context.Background(), sealed, ac); err != nil {
		t.Fatalf("create=1 on an existing key file replaced the key: %v", err)
	}
}

func TestMissingWithoutCreate(t *testing.T) {
	_, err := openAt(t, filepath.Join(t.TempDir(), "root.key"), false, nil)
	if !errors.Is(err, anchor.ErrDestroyed) {
		t.Fatalf("open of a missing key file: %v, want ErrDestroyed", err)
	}
}

func TestRefusesAccessibleFile(t *testing.T) {
	for _, mode := range []os.FileMode{0o640, 0o604, 0o660, 0o644} {
		path := filepath.Join(t.TempDir(), "root.key")
		p, err := openAt(t, path, true, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(path, mode); err != nil {
			t.Fatal(err)
		}
		if _, err := openAt(t, path, false, nil); !errors.Is(err, ErrInsecureFile) || !errors.Is(err, anchor.ErrKeyUnusable) {
			t.Errorf("open with mode %v: %v, want ErrInsecureFile", mode, err)
		}
		// An open provider refuses too, from the next call on.
		if err := p.Check(context.Background()); !errors.Is(err, ErrInsecureFile) {
			t.Errorf("Check with mode %v: %v, want ErrInsecureFile", mode, err)
		}
	}
	// A directory others can write to lets them swap the key.
	dir := filepath.Join(t.TempDir(), "d")
	path := filepath.Join(dir, "root.key")
	if _, err := openAt(t, path, true, nil); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(dir, 0o777); err != nil {
		t.Fatal(err)
	}
	if _, err := openAt(t, path, false, nil); !errors.Is(err, ErrInsecureFile) {
		t.Errorf("open in a world-writable directory: %v, want ErrInsecureFile", err)
	}
}

func TestMalformedFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "root.key")
	if _, err := openAt(t, path, true, nil); err != nil {
		t.Fatal(err)
	}
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	bad := map[string][]byte{
		"empty":     {},
		"truncated": good[:len(good)-1],
		"longer":    append(bytes.Clone(good), 0),
		"magic":     append([]byte("krypton-dev-rooT"), good[16:]...),
		"version":   append(append(bytes.Clone(good[:16]), 2), good[17:]...),
		"key bit": func() []byte {
			b := bytes.Clone(good)
			b[40] ^= 1
			return b
		}(),
	}
	for name, b := range bad {
		if err := os.WriteFile(path, b, 0o600); err != nil {
			t.Fatal(err)
		}
		_, err := openAt(t, path, false, nil)
		if !errors.Is(err, ErrMalformedFile) {
			t.Errorf("%s: %v, want ErrMalformedFile", name, err)
		}
		if err != nil && strings.Contains(err.Error(), hex.EncodeToString(good[33:65])) {
			t.Errorf("%s: error shows the key", name)
		}
	}
}

// A key file replaced by another key (destroyed and recreated) is the
// end of the key the provider was opened on: old blobs are gone.
func TestReplacedKeyIsDestroyed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "root.key")
	p, err := openAt(t, path, true, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := Destroy(path); err != nil {
		t.Fatal(err)
	}
	if _, err := openAt(t, path, true, nil); err != nil {
		t.Fatal(err)
	}
	if err := p.Check(context.Background()); !errors.Is(err, anchor.ErrDestroyed) {
		t.Fatalf("Check after the key file was replaced: %v, want ErrDestroyed", err)
	}
}

// Every start and every call says, loudly, that this is not for
// production.
func TestWarnsOnEveryUse(t *testing.T) {
	var lb logBuf
	p, err := openAt(t, filepath.Join(t.TempDir(), "root.key"), true, &lb)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	k := []byte("0123456789abcdef0123456789abcdef")
	sealed, err := p.Seal(ctx, k, ac)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p.Unseal(ctx, sealed, ac); err != nil {
		t.Fatal(err)
	}
	if err := p.Check(ctx); err != nil {
		t.Fatal(err)
	}
	out := lb.String()
	if n := strings.Count(out, "level=WARN"); n != 4 || strings.Count(out, "development only") != 4 {
		t.Errorf("want 4 development-only WARNs (open, seal, unseal, check), got:\n%s", out)
	}
	for _, op := range []string{"op=open", "op=seal", "op=unseal", "op=check", "key-id="} {
		if !strings.Contains(out, op) {
			t.Errorf("log lacks %s", op)
		}
	}
	raw, _ := os.ReadFile(p.path)
	if strings.Contains(out, hex.EncodeToString(raw[33:65])) || strings.Contains(out, string(k)) {
		t.Error("log shows key bytes")
	}
}

// The blob format is specified in format.go; this builds a blob from the
// specification with the standard library alone and opens it, so a change
// to the format (which would orphan every sealed L2 in development
// clusters) fails here.
func TestBlobFormatFromSpec(t *testing.T) {
	path := filepath.Join(t.TempDir(), "root.key")
	k := rootKey{}
	copy(k.id[:], "0123456789abcdef")
	for i := range k.key {
		k.key[i] = byte(i)
	}
	if err := os.WriteFile(path, k.marshal(), 0o600); err != nil {
		t.Fatal(err)
	}
	// The key file bytes, fixed.
	raw, _ := os.ReadFile(path)
	wantFile := hex.EncodeToString([]byte("krypton-dev-root")) + "01" + hex.EncodeToString([]byte("0123456789abcdef")) +
		"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
	if got := hex.EncodeToString(raw); !strings.HasPrefix(got, wantFile) || len(raw) != keyFileSize {
		t.Fatalf("key file = %s", got)
	}

	salt := bytes.Repeat([]byte{0x5a}, 32)
	header := append(append([]byte("KFA\x01"), k.id[:]...), salt...)
	dk, err := hkdf.Key(sha256.New, k.key[:], salt, "krypton file anchor seal v1", 32)
	if err != nil {
		t.Fatal(err)
	}
	// Format 1 (fixed zero nonce), built outside FIPS 140-only enforcement as an older writer
	// would: it must open in every mode.
	var gcm cipher.AEAD
	fips140.WithoutEnforcement(func() {
		block, _ := aes.NewCipher(dk)
		gcm, err = cipher.NewGCM(block)
	})
	if err != nil {
		t.Fatal(err)
	}
	pt := []byte("tenant key bytes, thirty-two!!!!")
	blob := gcm.Seal(bytes.Clone(header), make([]byte, 12), pt, append(bytes.Clone(header), ac.AAD()...))
	// Format 2: the same with a nonce after the salt.
	nonce := bytes.Repeat([]byte{0x6b}, 12)
	header2 := append(append([]byte("KFA\x02"), k.id[:]...), salt...)
	blob2 := gcm.Seal(append(bytes.Clone(header2), nonce...), nonce, pt, append(bytes.Clone(header2), ac.AAD()...))

	p, err := openAt(t, path, false, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := p.Unseal(context.Background(), blob, ac)
	if err != nil {
		t.Fatalf("blob built from the spec does not open: %v", err)
	}
	if !bytes.Equal(got, pt) {
		t.Fatal("wrong plaintext")
	}
	if got, err := p.Unseal(context.Background(), blob2, ac); err != nil || !bytes.Equal(got, pt) {
		t.Fatalf("format 2 blob built from the spec does not open: %v", err)
	}
	// And the provider's own blobs have the specified shape: format 2 in FIPS mode.
	sealed, err := p.Seal(context.Background(), pt, ac)
	if err != nil {
		t.Fatal(err)
	}
	wantMagic, wantLen := "KFA\x01", headerSize+len(pt)+tagSize
	if fips140.Enabled() {
		wantMagic, wantLen = "KFA\x02", headerSize+nonceSize+len(pt)+tagSize
	}
	if len(sealed) != wantLen || string(sealed[:4]) != wantMagic || !bytes.Equal(sealed[4:20], k.id[:]) {
		t.Fatalf("sealed blob %x does not follow the format", sealed)
	}
}

func TestFileURIThroughOpen(t *testing.T) {
	path := filepath.Join(t.TempDir(), "root.key")
	p, err := anchor.Open(context.Background(), "file://"+path, anchor.Options{Create: true, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	d := p.Describe()
	if d.Scheme != "file" || d.Key != path || !d.Development || d.URI != "file://"+path {
		t.Errorf("Describe() = %+v", d)
	}
}

// TestNoFileTouchedUnlessDevelopment: a file:// URI with create=1 opened by a process that does
// not allow development anchors (a production node) is refused before anything is made or read,
// and a development process makes the key only when it asked for Create itself, never because
// the URI (which comes from a request) says create=1.
func TestNoFileTouchedUnlessDevelopment(t *testing.T) {
	root := t.TempDir()
	uri := "file://" + filepath.Join(root, "x", "y") + "?create=1"
	_, err := anchor.Open(context.Background(), uri, anchor.Options{Logger: discard})
	if !errors.Is(err, anchor.ErrDevelopment) {
		t.Fatalf("open without Development: %v, want ErrDevelopment", err)
	}
	if _, err := os.Lstat(filepath.Join(root, "x")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("open without Development made %s/x (Lstat: %v)", root, err)
	}

	// An existing key is not read either: the refusal comes first.
	path := filepath.Join(t.TempDir(), "root.key")
	if _, err := openAt(t, path, true, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := anchor.Open(context.Background(), "file://"+path, anchor.Options{Logger: discard}); !errors.Is(err, anchor.ErrDevelopment) {
		t.Fatalf("open of an existing key without Development: %v, want ErrDevelopment", err)
	}

	// Development allowed, but no Create from the process: create=1 in the URI makes nothing.
	_, err = anchor.Open(context.Background(), uri, anchor.Options{Development: true, Logger: discard})
	if !errors.Is(err, anchor.ErrDestroyed) {
		t.Fatalf("open with Development, create=1 in the URI only: %v, want ErrDestroyed", err)
	}
	if _, err := os.Lstat(filepath.Join(root, "x")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("create=1 in the URI alone made %s/x (Lstat: %v)", root, err)
	}
}
