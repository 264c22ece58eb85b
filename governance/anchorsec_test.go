package governance_test

import (
	"bytes"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/governance"
	"github.com/kryptonkms/krypton/governance/governancetest"
	"github.com/kryptonkms/krypton/governance/govfsm"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) Bytes() []byte {
	l.mu.Lock()
	defer l.mu.Unlock()
	return bytes.Clone(l.b.Bytes())
}

// A pkcs11 URI with pin-value is refused by CreateTenant and SetAnchor with InvalidArgument naming
// pin-source, before anything is proposed (the Raft log does not move); the PIN reaches no file of
// the data directory, no log and no answer (issue 14, finding 5).
func TestPINValueRefusedByGovernance(t *testing.T) {
	const pin = "Pin-governance-refused-93a0c6e1"
	logs := &lockedBuffer{}
	g := governancetest.Start(t, 1, governancetest.WithLogs(logs))
	op := g.Client(0)
	ctx := g.Context(30 * time.Second)
	g.CreateTenant("acme", devAnchor, "eu")
	before, err := op.Status(ctx, &kv1.GovernanceStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	uri := "pkcs11:token=krypton;object=root?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=" + pin
	refused := func(what string, err error) {
		t.Helper()
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "pin-source") {
			t.Fatalf("%s with pin-value: %v, want InvalidArgument naming pin-source", what, err)
		}
		if strings.Contains(err.Error(), pin) {
			t.Fatalf("%s's error shows the PIN: %v", what, err)
		}
	}
	_, err = op.CreateTenant(ctx, &kv1.GovernanceCreateTenantRequest{RequestId: rid(), Tenant: "hsm", AnchorUri: uri, Regions: []string{"eu"}})
	refused("CreateTenant", err)
	_, err = op.SetAnchor(ctx, &kv1.SetAnchorRequest{RequestId: rid(), Tenant: "acme", AnchorUri: uri})
	refused("SetAnchor", err)

	after, err := op.Status(ctx, &kv1.GovernanceStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if after.GetHeadCursor() != before.GetHeadCursor() || after.GetCommitIndex() != before.GetCommitIndex() {
		t.Fatalf("the refusals moved the log: head %d -> %d, commit %d -> %d",
			before.GetHeadCursor(), after.GetHeadCursor(), before.GetCommitIndex(), after.GetCommitIndex())
	}
	tn, err := op.GetTenant(ctx, &kv1.GetTenantRequest{Tenant: "acme"})
	if err != nil {
		t.Fatal(err)
	}
	if tn.GetAnchorUri() != devAnchor {
		t.Fatalf("acme's anchor is %q after the refused SetAnchor", tn.GetAnchorUri())
	}
	g.Close()
	if bytes.Contains(logs.Bytes(), []byte(pin)) {
		t.Error("a log line shows the PIN")
	}
	err = filepath.WalkDir(g.Cfgs[0].DataDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(b, []byte(pin)) {
			t.Errorf("%s holds the PIN", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// A tenant whose stored URI holds a PIN (from before pin-value was refused) is shown redacted.
func TestStoredPINIsRedactedByGovernance(t *testing.T) {
	const pin = "Pin-governance-stored-5d2b7e08"
	tn := &govfsm.Tenant{Name: "hsm", AnchorURI: "pkcs11:token=t;object=o?pin-value=" + pin, Regions: []string{"eu"}}
	got := governance.TenantProto(tn).GetAnchorUri()
	if strings.Contains(got, pin) || !strings.Contains(got, "pin-value=xxxxx") {
		t.Fatalf("Proto shows anchor %q, want the PIN as xxxxx", got)
	}
}

// An anchor's endpoint override must use TLS (issue 14): CreateTenant and SetAnchor refuse an awskms
// endpoint=http://... that is not on loopback, with InvalidArgument naming https://, before
// anything is proposed. This governance allows development anchors (governancetest), so an
// emulator on loopback is accepted: the dev and test path; a governance without -dev-anchor
// refuses that too (TestCheckAnchorEndpoint).
func TestPlainEndpointRefusedByGovernance(t *testing.T) {
	g := governancetest.Start(t, 1)
	op := g.Client(0)
	ctx := g.Context(30 * time.Second)
	g.CreateTenant("acme", devAnchor, "eu")
	before, err := op.Status(ctx, &kv1.GovernanceStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	const remote = "awskms://alias/krypton-acme?region=eu-west-1&endpoint=http://192.0.2.7:4599"
	refused := func(what string, err error) {
		t.Helper()
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "https://") {
			t.Fatalf("%s on a remote http endpoint: %v, want InvalidArgument naming https://", what, err)
		}
	}
	_, err = op.CreateTenant(ctx, &kv1.GovernanceCreateTenantRequest{RequestId: rid(), Tenant: "cloud", AnchorUri: remote, Regions: []string{"eu"}})
	refused("CreateTenant", err)
	_, err = op.SetAnchor(ctx, &kv1.SetAnchorRequest{RequestId: rid(), Tenant: "acme", AnchorUri: remote})
	refused("SetAnchor", err)
	after, err := op.Status(ctx, &kv1.GovernanceStatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if after.GetHeadCursor() != before.GetHeadCursor() || after.GetCommitIndex() != before.GetCommitIndex() {
		t.Fatalf("the refusals moved the log: head %d -> %d, commit %d -> %d",
			before.GetHeadCursor(), after.GetHeadCursor(), before.GetCommitIndex(), after.GetCommitIndex())
	}
	if _, err := op.CreateTenant(ctx, &kv1.GovernanceCreateTenantRequest{RequestId: rid(), Tenant: "emulated",
		AnchorUri: "awskms://alias/krypton-acme?region=eu-west-1&endpoint=http://127.0.0.1:4599", Regions: []string{"eu"}}); err != nil {
		t.Fatalf("CreateTenant on a loopback emulator with development anchors allowed: %v", err)
	}
}
