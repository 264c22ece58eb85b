package fsm

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

func mustEncode(t testing.TB, e Entry) []byte {
	t.Helper()
	b, err := Encode(e)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestFSMApplyPanicsOnUndecodable(t *testing.T) {
	f := New(Options{})
	defer func() {
		r := recover()
		if s, ok := r.(string); !ok || !strings.HasPrefix(s, "fsm: cannot decode log entry at index 7") {
			t.Fatalf("recovered %v", r)
		}
		if f.AppliedIndex() != 0 {
			t.Fatal("undecodable entry advanced the applied index")
		}
	}()
	f.Apply(&raft.Log{Index: 7, Type: raft.LogCommand, Data: []byte(`{"v":9}`)})
	t.Fatal("no panic")
}

func TestFSMApplyResponses(t *testing.T) {
	f := New(Options{})
	r := f.Apply(&raft.Log{Index: 1, Data: mustEncode(t, Entry{Command: CreateTenant{Tenant: "a", Anchor: "file:///a", SealedL2: blob()}})})
	if res, ok := r.(Result); !ok || res.Index != 1 {
		t.Fatalf("response = %#v", r)
	}
	r = f.Apply(&raft.Log{Index: 2, Data: mustEncode(t, Entry{Command: CreateTenant{Tenant: "a", Anchor: "file:///a", SealedL2: blob()}})})
	if err, ok := r.(error); !ok || !errors.Is(err, ErrTenantExists) {
		t.Fatalf("response = %#v", r)
	}
	f.StoreConfiguration(3, raft.Configuration{})
	if f.AppliedIndex() != 3 {
		t.Fatalf("applied index = %d", f.AppliedIndex())
	}
}

// TestRaftCluster runs the FSM under a real three-node Raft (in-memory
// transport and stores), takes a snapshot, and brings a fresh node up to
// date by snapshot install plus log: every node ends with the same hash.
func TestRaftCluster(t *testing.T) {
	type node struct {
		id    raft.ServerID
		addr  raft.ServerAddress
		fsm   *FSM
		raft  *raft.Raft
		trans *raft.InmemTransport
	}
	conf := func(id raft.ServerID) *raft.Config {
		c := raft.DefaultConfig()
		c.LocalID = id
		// Loose enough that a loaded machine (two cores shared by many test
		// processes, -race) keeps one leader for the whole test: it has no
		// retry logic, since a retried Apply could apply an entry twice.
		c.HeartbeatTimeout = 500 * time.Millisecond
		c.ElectionTimeout = 500 * time.Millisecond
		c.LeaderLeaseTimeout = 500 * time.Millisecond
		c.CommitTimeout = 5 * time.Millisecond
		c.SnapshotThreshold = 1 << 30
		c.TrailingLogs = 10
		c.LogOutput = io.Discard
		return c
	}
	var restored atomic.Int32
	start := func(i int) *node {
		n := &node{id: raft.ServerID(fmt.Sprint("n", i)), fsm: New(Options{OnChange: func(c Change) {
			if c.Kind == Restored {
				restored.Add(1)
			}
		}})}
		n.addr, n.trans = raft.NewInmemTransport("")
		r, err := raft.NewRaft(conf(n.id), n.fsm, raft.NewInmemStore(), raft.NewInmemStore(), raft.NewInmemSnapshotStore(), n.trans)
		if err != nil {
			t.Fatal(err)
		}
		n.raft = r
		t.Cleanup(func() { r.Shutdown().Error() })
		return n
	}
	nodes := []*node{start(0), start(1)}
	connect := func() {
		for _, a := range nodes {
			for _, b := range nodes {
				a.trans.Connect(b.addr, b.trans)
			}
		}
	}
	connect()
	var servers []raft.Server
	for _, n := range nodes {
		servers = append(servers, raft.Server{ID: n.id, Address: n.addr})
	}
	if err := nodes[0].raft.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
		t.Fatal(err)
	}
	var leader *raft.Raft
	for deadline := time.Now().Add(10 * time.Second); leader == nil; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("no leader")
		}
		for _, n := range nodes {
			if n.raft.State() == raft.Leader {
				leader = n.raft
			}
		}
	}
	apply := func(e Entry) any {
		f := leader.Apply(mustEncode(t, e), 5*time.Second)
		if err := f.Error(); err != nil {
			t.Fatal(err)
		}
		return f.Response()
	}
	log := genLog(t, 42, 200)
	for i, b := range log {
		e, _ := Decode(b)
		if i == 100 {
			if err := leader.Snapshot().Error(); err != nil {
				t.Fatal(err)
			}
		}
		apply(e)
	}
	if err := leader.Snapshot().Error(); err != nil {
		t.Fatal(err)
	}
	// A third node joins after the log was compacted: it needs the snapshot.
	n := start(2)
	nodes = append(nodes, n)
	connect()
	if err := leader.AddVoter(n.id, n.addr, 0, 5*time.Second).Error(); err != nil {
		t.Fatal(err)
	}
	resp := apply(Entry{Command: CreateTenant{Tenant: "last", Anchor: "file:///l", SealedL2: blob()}})
	if _, ok := resp.(Result); !ok {
		t.Fatalf("response = %#v", resp)
	}
	want := leader.AppliedIndex()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		done := true
		for _, n := range nodes {
			done = done && n.fsm.AppliedIndex() >= want
		}
		if done {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("nodes did not catch up")
		}
	}
	for _, n := range nodes[1:] {
		if n.fsm.Hash() != nodes[0].fsm.Hash() {
			t.Fatalf("%s hash differs", n.id)
		}
	}
	if _, err := n.fsm.State().Tenant("last"); err != nil {
		t.Fatal(err)
	}
	if restored.Load() == 0 {
		t.Fatal("the new node was not brought up by a snapshot")
	}
}
