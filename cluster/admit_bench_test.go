package cluster

import (
	"testing"
	"time"

	"github.com/hashicorp/raft"
)

// BenchmarkRaftAdmission measures what the per-read admission check (admitRaft, on every read of
// an accepted Raft stream) costs: one load of Raft's latest configuration and a scan of its
// servers, plus the leader's id for a node not yet in its own configuration.
func BenchmarkRaftAdmission(b *testing.B) {
	conf := raft.DefaultConfig()
	conf.LocalID = "node-0"
	conf.Logger = newHCLogger(discardLogger(), "raft")
	_, trans := raft.NewInmemTransport("node-0")
	store := raft.NewInmemStore()
	r, err := raft.NewRaft(conf, &raft.MockFSM{}, store, store, raft.NewInmemSnapshotStore(), trans)
	if err != nil {
		b.Fatal(err)
	}
	defer func() { _ = r.Shutdown().Error() }()
	var servers []raft.Server
	for _, id := range []string{"node-0", "node-1", "node-2", "node-3", "node-4"} {
		servers = append(servers, raft.Server{ID: raft.ServerID(id), Address: raft.ServerAddress(id)})
	}
	if err := r.BootstrapCluster(raft.Configuration{Servers: servers}).Error(); err != nil {
		b.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for len(r.GetConfiguration().Configuration().Servers) == 0 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	c := &Cluster{cfg: Config{NodeID: "node-0"}, startedCh: make(chan struct{})}
	c.started.Store(r)
	close(c.startedCh)
	b.Run("member", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if c.admitRaft("node-4") != nil {
				b.Fatal("refused a member")
			}
		}
	})
	b.Run("non-member", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if c.admitRaft("node-9") == nil {
				b.Fatal("admitted a non-member")
			}
		}
	})
}
