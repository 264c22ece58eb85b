package region

import (
	"bytes"
	"io"
	"strings"
	"testing"

	"github.com/hashicorp/raft"

	"github.com/kryptonkms/krypton/fsm"
)

// bufSink is a raft.SnapshotSink into memory.
type bufSink struct{ bytes.Buffer }

func (*bufSink) ID() string    { return "test" }
func (*bufSink) Cancel() error { return nil }
func (*bufSink) Close() error  { return nil }

// A tenant whose stored anchor URI holds a PIN (written before pin-value was refused, and carried
// by an old snapshot) is answered with the PIN redacted by every response built from the tenant:
// DescribeTenant, ListTenants, CreateTenant's retry, LockTenant, UnlockTenant, RekeyTenant.
func TestStoredPINIsRedactedInResponses(t *testing.T) {
	const pin = "Pin-old-snapshot-2f9d41c7"
	uri := "pkcs11:token=t;object=root?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=" + pin
	old := fsm.New(fsm.Options{})
	data, err := fsm.Encode(fsm.Entry{At: 1, Command: fsm.CreateTenant{Tenant: "acme", Anchor: uri, SealedL2: []byte("sealed")}})
	if err != nil {
		t.Fatal(err)
	}
	if r, ok := old.Apply(&raft.Log{Index: 1, Type: raft.LogCommand, Data: data}).(error); ok {
		t.Fatal(r)
	}
	snap, err := old.Snapshot()
	if err != nil {
		t.Fatal(err)
	}
	var sink bufSink
	if err := snap.Persist(&sink); err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(sink.Bytes(), []byte(pin)) {
		t.Fatal("the old snapshot does not hold the PIN: the test would prove nothing")
	}
	restored := fsm.New(fsm.Options{})
	if err := restored.Restore(io.NopCloser(&sink)); err != nil {
		t.Fatal(err)
	}
	n := &Node{state: restored.State()}
	tenant, err := n.state.Tenant("acme")
	if err != nil {
		t.Fatal(err)
	}
	if tenant.Anchor != uri {
		t.Fatalf("restored anchor %q is not the stored one", tenant.Anchor)
	}
	got := n.tenantProto(tenant).GetAnchorUri()
	if strings.Contains(got, pin) || !strings.Contains(got, "pin-value=xxxxx") {
		t.Fatalf("the tenant's answer shows anchor %q, want the PIN as xxxxx", got)
	}
}
