package region

import (
	"path/filepath"
	"testing"
	"time"

	"go.etcd.io/bbolt"
)

// TestRevSetRetriesUnsaved: a revocation whose write to the durable set failed (a full disk) is
// enforced in memory and written with the next one once writes succeed again; before, it stayed
// out of the file until the next start re-added it from the log.
func TestRevSetRetriesUnsaved(t *testing.T) {
	dir := t.TempDir()
	s, err := openRevSet(dir)
	if err != nil {
		t.Fatal(err)
	}
	s.db.Close() // every write fails, as on a full disk
	if err := s.add([]revEntry{{Tenant: "t", Service: "s", Version: 1}}); err == nil {
		t.Fatal("add on a closed file succeeded")
	}
	if !s.revoked("t", "s", 1) {
		t.Fatal("a revocation whose write failed is not enforced in memory")
	}
	if s.db, err = bbolt.Open(filepath.Join(dir, revsetFile), 0o600, &bbolt.Options{Timeout: time.Second}); err != nil {
		t.Fatal(err)
	}
	if err := s.add([]revEntry{{Tenant: "t", Service: "s", Version: 2}}); err != nil {
		t.Fatal(err)
	}
	s.close()
	s, err = openRevSet(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer s.close()
	for _, v := range []uint32{1, 2} {
		if !s.revoked("t", "s", v) {
			t.Errorf("v%d is not in the durable set after a write succeeded", v)
		}
	}
}
