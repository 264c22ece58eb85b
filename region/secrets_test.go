package region_test

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/kryptonkms/krypton/anchor"
	"github.com/kryptonkms/krypton/region/regiontest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
	"github.com/kryptonkms/krypton/wrap"
)

// syncBuffer is a bytes.Buffer safe for the nodes' concurrent log writes.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) Bytes() []byte {
	b.mu.Lock()
	defer b.mu.Unlock()
	return bytes.Clone(b.buf.Bytes())
}

// secretForms returns the ways a 32-byte secret could be written down: raw, hex in both cases,
// and base64 (standard and URL alphabets, padded or not) at each of the three alignments it can
// have inside a longer base64 text, less the characters that depend on its neighbours.
func secretForms(k []byte) [][]byte {
	out := [][]byte{k, []byte(hex.EncodeToString(k)), []byte(strings.ToUpper(hex.EncodeToString(k)))}
	for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding} {
		for off := range 3 {
			s := enc.EncodeToString(append(make([]byte, off), k...))
			start := 0
			if off > 0 {
				start = 4
			}
			out = append(out, []byte(s[start:len(s)-4]))
		}
	}
	return out
}

// findSecrets reports every secret (by name) that data holds in any form.
func findSecrets(data []byte, secrets map[string][]byte) []string {
	var found []string
	for name, k := range secrets {
		for _, f := range secretForms(k) {
			if bytes.Contains(data, f) {
				found = append(found, name)
				break
			}
		}
	}
	return found
}

// openSealedServiceKey opens a sealed L3 (kind 1) under its L2's bytes by hand, as docs/format.md
// says, to learn the L3's bytes: wrap hands out no ServiceKey bytes.
func openSealedServiceKey(t *testing.T, l2, blob []byte) []byte {
	t.Helper()
	header := blob[:len(blob)-48]
	salt := header[len(header)-44 : len(header)-12]
	nonce := header[len(header)-12:]
	const label = "krypton/wrap/v1 seal service key"
	var k []byte
	switch wrap.KDF(blob[3]) {
	case wrap.KDFHKDFSHA256:
		var err error
		if k, err = hkdf.Key(sha256.New, l2, salt, label, 32); err != nil {
			t.Fatal(err)
		}
	case wrap.KDFCounterHMACSHA256:
		m := hmac.New(sha256.New, l2)
		m.Write(binary.BigEndian.AppendUint32(nil, 1))
		m.Write([]byte(label))
		m.Write([]byte{0})
		m.Write(salt)
		m.Write(binary.BigEndian.AppendUint32(nil, 256))
		k = m.Sum(nil)
	default:
		t.Fatalf("sealed service key with KDF %d", blob[3])
	}
	block, err := aes.NewCipher(k)
	if err != nil {
		t.Fatal(err)
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	plain, err := gcm.Open(nil, nonce, blob[len(header):], binary.BigEndian.AppendUint32(bytes.Clone(header), 0))
	if err != nil {
		t.Fatalf("opening a sealed service key by hand: %v", err)
	}
	return plain
}

func TestSecretFormsFindPlantedSecrets(t *testing.T) {
	k := randKey(t)
	secrets := map[string][]byte{"k": k}
	for i, f := range secretForms(k) {
		if got := findSecrets(append(append([]byte("prefix "), f...), " suffix"...), secrets); len(got) != 1 {
			t.Fatalf("form %d not found", i)
		}
	}
	for off := range 3 {
		text := base64.RawURLEncoding.EncodeToString(append(append(make([]byte, 7+off), k...), 1, 2, 3))
		if got := findSecrets([]byte(text), secrets); len(got) != 1 {
			t.Fatalf("base64 at offset %d not found", off)
		}
	}
	if got := findSecrets(bytes.Repeat([]byte("x"), 1000), secrets); len(got) != 0 {
		t.Fatal("found a secret where there is none")
	}
}

// TestNoSecretsAtRest runs a region through creating tenants and keys, wrapping, generating,
// rotating and revoking, then stops it and looks in every file under every node's data directory
// (Raft log, snapshots, audit log) and in every line the nodes logged, at debug level, for any
// known data key (L4), tenant key (L2), service key (L3) or the root key (L1), raw, hex or base64.
func TestNoSecretsAtRest(t *testing.T) {
	t.Parallel()
	logs := &syncBuffer{}
	r := regiontest.Start(t, 3, regiontest.WithLogs(logs))
	admin := r.AdminClient(r.Leader())
	createTenant(t, admin, r.Anchor, "acme", "payments", "ledger")
	createTenant(t, admin, r.Anchor, "globex", "payments")
	secrets := map[string][]byte{}
	var blobs []struct {
		tenant, service string
		w               wrapped
	}
	keep := func(tenant, service string, w wrapped) {
		secrets[fmt.Sprintf("L4 %s/%s #%d", tenant, service, len(secrets))] = w.plain
		blobs = append(blobs, struct {
			tenant, service string
			w               wrapped
		}{tenant, service, w})
	}
	for _, k := range []struct{ tenant, service string }{{"acme", "payments"}, {"acme", "ledger"}, {"globex", "payments"}} {
		for i := range r.Nodes {
			keep(k.tenant, k.service, mustWrap(t, r, i, k.tenant, k.service))
			c := r.WrapClient(i, k.tenant, k.service)
			g, err := c.GenerateDataKey(ctxT(t), &kv1.GenerateDataKeyRequest{Key: &kv1.KeyRef{Tenant: k.tenant, Service: k.service}, Context: []byte("g")})
			if err != nil {
				t.Fatal(err)
			}
			keep(k.tenant, k.service, wrapped{plain: g.GetPlaintext(), ctx: []byte("g"), blob: g.GetBlob()})
			bg, err := c.BatchGenerateDataKey(ctxT(t), &kv1.BatchGenerateDataKeyRequest{Items: []*kv1.GenerateDataKeyRequest{{Key: &kv1.KeyRef{Tenant: k.tenant, Service: k.service}}, {Key: &kv1.KeyRef{Tenant: k.tenant, Service: k.service}}}})
			if err != nil {
				t.Fatal(err)
			}
			for _, res := range bg.GetResults() {
				keep(k.tenant, k.service, wrapped{plain: res.GetValue().GetPlaintext(), blob: res.GetValue().GetBlob()})
			}
		}
	}
	if _, err := admin.RotateKey(ctxT(t), &kv1.RotateKeyRequest{RequestId: "rot", Tenant: "acme", Service: "payments"}); err != nil {
		t.Fatal(err)
	}
	waitSameState(t, r)
	for i := range r.Nodes {
		w := mustWrap(t, r, i, "acme", "payments")
		keep("acme", "payments", w)
		rw, err := r.WrapClient(i, "acme", "payments").Rewrap(ctxT(t), &kv1.RewrapRequest{Blob: blobs[0].w.blob, Context: blobs[0].w.ctx})
		if err != nil {
			t.Fatal(err)
		}
		keep("acme", "payments", wrapped{plain: blobs[0].w.plain, ctx: blobs[0].w.ctx, blob: rw.GetBlob()})
	}

	// The keys above the data keys: L1 from its file, L2 through the anchor's own API, L3 by opening
	// its sealed blob under L2 by hand. Each is checked by using it.
	keyFile, err := os.ReadFile(strings.TrimPrefix(r.Anchor, "file://"))
	if err != nil {
		t.Fatal(err)
	}
	off := len("krypton-dev-root") + 1 + 16
	secrets["L1 root key"] = keyFile[off : off+32]
	p, err := anchor.Open(context.Background(), r.Anchor, anchor.Options{Development: true})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	st := r.Nodes[r.Leader()].State()
	l3s := map[wrap.KeyID][]byte{}
	// The sealed L2 and L3 versions are in the Raft log entries every node's audit records are
	// made from (auditapply.go): no audit log may hold them either, in any encoding.
	sealed := map[string][]byte{}
	for _, tn := range st.ListTenants() {
		for i, l2 := range tn.L2 {
			v := uint32(i + 1)
			b, err := p.Unseal(ctxT(t), l2.Sealed, anchor.Context{Region: "test", Tenant: tn.Name, Version: v})
			if err != nil {
				t.Fatalf("unsealing %s's L2 v%d: %v", tn.Name, v, err)
			}
			secrets[fmt.Sprintf("L2 %s@v%d", tn.Name, v)] = b
			sealed[fmt.Sprintf("sealed L2 %s@v%d", tn.Name, v)] = l2.Sealed
			svcs, err := st.ListServices(tn.Name)
			if err != nil {
				t.Fatal(err)
			}
			for _, svc := range svcs {
				versions, err := st.ListKeyVersions(tn.Name, svc.Name)
				if err != nil {
					t.Fatal(err)
				}
				for _, kv := range versions {
					if kv.SealedBy != v {
						continue
					}
					id := wrap.KeyID{Tenant: tn.Name, Service: svc.Name, Version: kv.Version}
					l3s[id] = openSealedServiceKey(t, b, kv.Sealed)
					secrets["L3 "+id.String()] = l3s[id]
					sealed["sealed L3 "+id.String()] = kv.Sealed
				}
			}
		}
	}
	if len(l3s) != 4 {
		t.Fatalf("learnt %d service keys, want 4", len(l3s))
	}
	for _, b := range blobs {
		h, err := wrap.ParseHeader(b.w.blob)
		if err != nil {
			t.Fatal(err)
		}
		l3, err := wrap.ServiceKeyFromBytes(h.Parent, bytes.Clone(l3s[h.Parent])) // it wipes what it is given
		if err != nil {
			t.Fatal(err)
		}
		dk, err := l3.Unwrap(b.w.blob, b.w.ctx)
		if err != nil || !bytes.Equal(dk.Bytes(), b.w.plain) {
			t.Fatalf("the service key learnt for %s does not open its blob: %v", h.Parent, err)
		}
		dk.Destroy()
		l3.Destroy()
	}

	// Revoke a version and a tenant, as the run's last writes.
	if _, err := admin.RevokeKey(ctxT(t), &kv1.RevokeKeyRequest{RequestId: "rev-v1", Scope: &kv1.KeyScope{Tenant: "acme", Service: "payments", Version: 1}, Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	if _, err := admin.RevokeKey(ctxT(t), &kv1.RevokeKeyRequest{RequestId: "rev-globex", Scope: &kv1.KeyScope{Tenant: "globex"}, Reason: "test"}); err != nil {
		t.Fatal(err)
	}
	// An operator snapshot of every node: Raft writes it to the node's snapshot store too. Its
	// stream is scanned as well.
	var streamed []byte
	for i := range r.Nodes {
		for _, c := range saveSnapshot(t, r.AdminClient(i)) {
			streamed = append(streamed, c.GetData()...)
		}
	}
	if found := findSecrets(streamed, secrets); len(found) > 0 {
		t.Errorf("SnapshotSave streams %v", found)
	}
	// Restart one node, so that it replays its snapshot and log, then stop everything so that every
	// file is complete.
	r.Kill(0)
	r.Start(0)
	r.WaitCaughtUp(0)
	r.Close()

	scanned, audits := 0, 0
	for _, c := range r.Cfgs {
		err := filepath.WalkDir(c.DataDir, func(path string, d fs.DirEntry, err error) error {
			if err != nil || d.IsDir() {
				return err
			}
			data, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			scanned++
			if filepath.Base(path) == "audit.log" && len(data) > 0 {
				audits++
				if found := findSecrets(data, sealed); len(found) > 0 {
					t.Errorf("%s holds %v", path, found)
				}
				if !bytes.Contains(data, []byte(`"request-id":"rev-globex"`)) {
					t.Errorf("%s has no record of the revocation rev-globex: every node records what it applied", path)
				}
			}
			if found := findSecrets(data, secrets); len(found) > 0 {
				t.Errorf("%s holds %v", path, found)
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	// Each node has at least its audit log, its Raft store and a snapshot; each audited the writes.
	if audits != len(r.Cfgs) || scanned < 3*len(r.Cfgs) {
		t.Fatalf("scanned %d files, %d non-empty audit logs: not the data directories expected", scanned, audits)
	}
	out := logs.Bytes()
	if !bytes.Contains(out, []byte("level=DEBUG")) || !bytes.Contains(out, []byte("node-1")) {
		t.Fatalf("the nodes' debug logs did not reach the buffer (%d bytes)", len(out))
	}
	if found := findSecrets(out, secrets); len(found) > 0 {
		t.Errorf("the nodes' logs hold %v", found)
	}
	t.Logf("scanned %d files and %d bytes of logs for %d secrets", scanned, len(out), len(secrets))
}
