package govfsm_test

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/kryptonkms/krypton/cluster"
	"github.com/kryptonkms/krypton/governance"
	"github.com/kryptonkms/krypton/governance/govfsm"
)

// A follower refuses a snapshot from its leader (InstallSnapshot) that lacks a revocation in its
// event log: the state machine's check, as the cluster calls it, with the state unchanged. A
// snapshot that only adds to the log is installed.
func TestInstallRefusesSnapshotWithoutRevocation(t *testing.T) {
	old := govfsm.NewFSM()
	mustOK(t, apply(t, old, cmd(govfsm.OpCreateTenant, "c1", "acme", withAnchor(devAnchor), withRegions("eu"))))
	mustOK(t, apply(t, old, cmd(govfsm.OpCreateService, "s1", "acme", withService("billing", 0))))
	oldSnap, err := old.Encode()
	if err != nil {
		t.Fatal(err)
	}
	f := govfsm.NewFSM()
	mustOK(t, apply(t, f, cmd(govfsm.OpCreateTenant, "c1", "acme", withAnchor(devAnchor), withRegions("eu"))))
	mustOK(t, apply(t, f, cmd(govfsm.OpCreateService, "s1", "acme", withService("billing", 0))))
	mustOK(t, apply(t, f, cmd(govfsm.OpRevoke, "r1", "acme", withService("billing", 2))))
	before, _ := f.Encode()

	err = (governance.StateMachine{FSM: f}).RestoreKind(io.NopCloser(bytes.NewReader(oldSnap)), cluster.RestoreInstall, 0)
	if !errors.Is(err, govfsm.ErrSnapshotLacksRevocations) || !errors.Is(err, cluster.ErrSnapshotRefused) || !strings.Contains(err.Error(), "key acme/billing v2 revoked") {
		t.Fatalf("installing a snapshot without the revocation: %v, want ErrSnapshotLacksRevocations naming acme/billing v2", err)
	}
	if after, _ := f.Encode(); !bytes.Equal(after, before) {
		t.Fatal("a refused install changed the state")
	}
	// A snapshot whose log has the revocation at its cursor, with more after it, installs.
	newer := govfsm.NewFSM()
	if err := newer.Restore(io.NopCloser(bytes.NewReader(before))); err != nil {
		t.Fatal(err)
	}
	mustOK(t, apply(t, newer, cmd(govfsm.OpLockTenant, "l1", "acme")))
	newSnap, _ := newer.Encode()
	if err := (governance.StateMachine{FSM: f}).RestoreKind(io.NopCloser(bytes.NewReader(newSnap)), cluster.RestoreInstall, 0); err != nil {
		t.Fatalf("installing a later snapshot: %v", err)
	}
	// A forked log (another revocation at the revocation's cursor) is refused too.
	fork := govfsm.NewFSM()
	mustOK(t, apply(t, fork, cmd(govfsm.OpCreateTenant, "c1", "acme", withAnchor(devAnchor), withRegions("eu"))))
	mustOK(t, apply(t, fork, cmd(govfsm.OpCreateService, "s1", "acme", withService("billing", 0))))
	mustOK(t, apply(t, fork, cmd(govfsm.OpRevoke, "r-other", "acme", withService("billing", 1))))
	forkSnap, _ := fork.Encode()
	if err := (governance.StateMachine{FSM: f}).RestoreKind(io.NopCloser(bytes.NewReader(forkSnap)), cluster.RestoreInstall, 0); !errors.Is(err, govfsm.ErrSnapshotLacksRevocations) {
		t.Fatalf("installing a forked snapshot: %v, want ErrSnapshotLacksRevocations", err)
	}
	// The node's own snapshot at start is not checked (its log follows).
	if err := (governance.StateMachine{FSM: f}).RestoreKind(io.NopCloser(bytes.NewReader(oldSnap)), cluster.RestoreStartup, 0); err != nil {
		t.Fatalf("restoring at start: %v", err)
	}
}
