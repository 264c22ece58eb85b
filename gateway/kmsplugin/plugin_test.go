package kmsplugin_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kryptonkms/krypton/client"
	"github.com/kryptonkms/krypton/gateway/kmsplugin"
)

// TestConfigRefusals: a bad Config is refused naming the field, and changes nothing on disk.
// (The plugin at work, with the apiserver's own code, is tested in package apiservertest.)
func TestConfigRefusals(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	keys := &client.Client{}
	for _, tc := range []struct {
		name string
		set  func(*kmsplugin.Config)
		want string
	}{
		{"no keys", func(c *kmsplugin.Config) { c.Keys = nil }, "Config.Keys is required"},
		{"no socket", func(c *kmsplugin.Config) { c.Socket = "" }, "Config.Socket is required"},
		{"mode", func(c *kmsplugin.Config) { c.SocketMode = os.ModeSetuid | 0o600 }, "permission bits only"},
		{"timeout", func(c *kmsplugin.Config) { c.Timeout = -1 }, "Timeout must not be negative"},
		{"context", func(c *kmsplugin.Config) { c.Context = make([]byte, 4097) }, "Context is over 4096 bytes"},
		{"a file in the socket's place", func(c *kmsplugin.Config) { c.Socket = file }, "exists and is not a socket"},
	} {
		cfg := kmsplugin.DefaultConfig()
		cfg.Keys, cfg.Socket = keys, filepath.Join(dir, "kms.sock")
		tc.set(&cfg)
		p, err := kmsplugin.New(cfg)
		if err == nil {
			p.Close()
			t.Errorf("%s: New succeeded", tc.name)
			continue
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.want)
		}
	}
	if b, err := os.ReadFile(file); err != nil || string(b) != "x" {
		t.Errorf("the file in the socket's place: %q %v", b, err)
	}
	if _, err := os.Stat(filepath.Join(dir, "kms.sock")); !os.IsNotExist(err) {
		t.Errorf("a refused Config left a socket: %v", err)
	}
}

// TestKeyID: what is not an envelope ciphertext has no key ID.
func TestKeyID(t *testing.T) {
	t.Parallel()
	for _, b := range [][]byte{nil, []byte("KGW\x01"), []byte("k8s:enc:kms:v2:krypton:")} {
		if id, err := kmsplugin.KeyID(b); err == nil {
			t.Errorf("KeyID(%q) = %q, want an error", b, id)
		}
	}
}
