package governance_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/kryptonkms/krypton/governance"
	"github.com/kryptonkms/krypton/governance/governancetest"
	"github.com/kryptonkms/krypton/internal/audit"
	"github.com/kryptonkms/krypton/internal/audit/rsyslogtest"
	"github.com/kryptonkms/krypton/internal/pki"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// TestAuditToRealRsyslog runs three governance nodes whose audit sinks send to Debian's real
// rsyslogd (imtcp with the gtls driver, mutual TLS: each node presents its own certificate)
// and restarts rsyslog while tenants are being created. Every line of every node's audit log
// reaches rsyslog, which parses it as RFC 5424 (APP-NAME, MSGID, structured data) and writes
// it byte for byte; one copy of each line per node verifies as that node's hash chain; lines
// arrive at most twice (resent after the one restart; docs/audit.md, "Delivery").
func TestAuditToRealRsyslog(t *testing.T) {
	t.Parallel()
	ca, err := pki.NewCA("siem test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	rs := rsyslogtest.Start(t, ca)
	g := governancetest.Start(t, 3, governancetest.WithCA(ca), governancetest.WithConfig(func(c *governance.Config) {
		c.AuditSyslog = &audit.SyslogConfig{Addr: rs.Addr, TLS: rs.ClientTLS(c.Certificate),
			Hostname: c.NodeID, MinBackoff: 20 * time.Millisecond, MaxBackoff: 200 * time.Millisecond}
	}))

	// The writer creates tenants until stopped; it is owned by this test.
	var created atomic.Int64
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			_, err := g.Client(g.WaitLeader()).CreateTenant(g.Context(20*time.Second), &kv1.GovernanceCreateTenantRequest{
				RequestId: governancetest.RequestID(), Tenant: fmt.Sprintf("t%d", i), AnchorUri: devAnchor,
				Regions: []string{"eu"}, OwnerPublicKey: g.Owner.Public})
			if err != nil {
				t.Errorf("creating tenant t%d: %v", i, err)
				return
			}
			created.Add(1)
		}
	}()
	stopWriter := sync.OnceFunc(func() { close(stop); wg.Wait() })
	defer stopWriter()
	received := func() int { m, _ := rs.Messages(); return len(m) }

	// Three nodes write a record of each tenant: wait for 20 tenants' worth, restart rsyslog
	// while the writer goes on, then wait for 20 more tenants after the restart.
	waitFor := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(time.Minute) // generous: the machine may be loaded
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %s\n%s", what, rs.Logs())
			}
			time.Sleep(10 * time.Millisecond) // polling, bounded by the deadline
		}
	}
	t0 := time.Now()
	waitFor("rsyslog to receive 60 records", func() bool { return received() >= 60 })
	t1 := time.Now()
	rs.Stop()
	t2 := time.Now()
	down := created.Load()
	waitFor("5 tenants created while rsyslog is down", func() bool { return created.Load() >= down+5 })
	rs.Start()
	t3 := time.Now()
	up := created.Load()
	waitFor("20 tenants created after rsyslog's restart", func() bool { return created.Load() >= up+20 })
	stopWriter()
	t.Logf("first 60 %v, stop %v, down+start %v, after %v", t1.Sub(t0), t2.Sub(t1), t3.Sub(t2), time.Since(t3))

	var files []string
	for _, c := range g.Cfgs {
		files = append(files, filepath.Join(c.DataDir, "audit.log"))
	}
	// Followers apply the last tenants a moment after the leader answered.
	waitFor("every node to record every tenant", func() bool {
		for _, f := range files {
			if n, err := lineCount(f); err != nil || n < int(created.Load()) {
				return false
			}
		}
		return true
	})
	d := rs.WaitDelivered(t, time.Minute, files...)
	t.Logf("%d tenants, %d audit lines on 3 nodes, %d messages received by rsyslog (%d copies resent after the restart)",
		created.Load(), d.Lines, d.Received, d.Duplicates)
	if d.Lines < 3*int(created.Load()) {
		t.Fatalf("%d audit lines for %d tenants on 3 nodes", d.Lines, created.Load())
	}
	if d.MaxCopies > 2 {
		t.Fatalf("a line arrived %d times after one restart of rsyslog", d.MaxCopies)
	}
}

func lineCount(path string) (int, error) {
	b, err := os.ReadFile(path)
	return bytes.Count(b, []byte("\n")), err
}
