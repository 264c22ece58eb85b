package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/region/regiontest"
)

// cliRegion runs krypton command lines, through run, against a live in-process region.
type cliRegion struct {
	t     *testing.T
	r     *regiontest.Region
	dir   string
	ca    string
	op    [2]string // operator certificate and key
	svc   [2]string // service certificate and key, acme/payments
	other [2]string // service certificate and key, acme/ledger
}

func startCLIRegion(t *testing.T) *cliRegion {
	r := regiontest.Start(t, 3)
	c := &cliRegion{t: t, r: r, dir: t.TempDir()}
	c.ca = filepath.Join(c.dir, "ca.pem")
	if err := os.WriteFile(c.ca, r.CA.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	op, err := r.CA.IssueOperator("alice", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	c.op = [2]string{filepath.Join(c.dir, "op.pem"), filepath.Join(c.dir, "op-key.pem")}
	if err := op.WriteFiles(c.op[0], c.op[1]); err != nil {
		t.Fatal(err)
	}
	for _, s := range []struct {
		service string
		files   *[2]string
	}{{"payments", &c.svc}, {"ledger", &c.other}} {
		cert, err := r.CA.IssueService("acme", s.service, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		*s.files = [2]string{filepath.Join(c.dir, s.service+".pem"), filepath.Join(c.dir, s.service+"-key.pem")}
		if err := cert.WriteFiles(s.files[0], s.files[1]); err != nil {
			t.Fatal(err)
		}
	}
	return c
}

// run runs one command line against node i with the given certificate and returns stdout, stderr
// and the exit code.
func (c *cliRegion) run(node int, cert [2]string, args ...string) (string, string, int) {
	c.t.Helper()
	return c.runFlags(node, cert, nil, args...)
}

// runFlags is run with extra flags placed, as the connection flags are, before the arguments.
func (c *cliRegion) runFlags(node int, cert [2]string, extra []string, args ...string) (string, string, int) {
	c.t.Helper()
	full := append([]string{}, args...)
	// Connection flags go after the command words, before the arguments: find the first flag or
	// the end of the command words.
	conn := []string{"-addr", c.r.Cfgs[node].RPCAddr, "-ca-cert", c.ca, "-client-cert", cert[0], "-client-key", cert[1], "-timeout", "20s"}
	conn = append(conn, extra...)
	i := 0
	for i < len(full) && !strings.HasPrefix(full[i], "-") && isCommandWord(full[:i+1]) {
		i++
	}
	full = append(append(append([]string{}, full[:i]...), conn...), full[i:]...)
	stdout, stderr := c.tempFile("stdout"), c.tempFile("stderr")
	code := run(context.Background(), full, stdout, stderr)
	out, errOut := readBack(c.t, stdout), readBack(c.t, stderr)
	c.t.Logf("krypton %s -> %d\n%s%s", strings.Join(args, " "), code, out, errOut)
	return out, errOut, code
}

// isCommandWord says whether path names a command of the tree (so the next word may be one too).
func isCommandWord(path []string) bool {
	cmd := rootCommand()
	for _, w := range path {
		if cmd = cmd.find(w); cmd == nil {
			return false
		}
	}
	return true
}

func (c *cliRegion) tempFile(name string) *os.File {
	f, err := os.CreateTemp(c.dir, name)
	if err != nil {
		c.t.Fatal(err)
	}
	return f
}

func readBack(t *testing.T, f *os.File) string {
	defer f.Close()
	b, err := os.ReadFile(f.Name())
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// ok runs a command that must succeed and returns its stdout.
func (c *cliRegion) ok(node int, cert [2]string, args ...string) string {
	c.t.Helper()
	out, errOut, code := c.run(node, cert, args...)
	if code != 0 {
		c.t.Fatalf("krypton %s: exit %d: %s", strings.Join(args, " "), code, errOut)
	}
	return out
}

func (c *cliRegion) okJSON(node int, cert [2]string, v any, args ...string) {
	c.t.Helper()
	out, errOut, code := c.runFlags(node, cert, []string{"-format", "json"}, args...)
	if code != 0 {
		c.t.Fatalf("krypton %s -format json: exit %d: %s", strings.Join(args, " "), code, errOut)
	}
	if err := json.Unmarshal([]byte(out), v); err != nil {
		c.t.Fatalf("krypton %s -format json: %v\n%s", strings.Join(args, " "), err, out)
	}
}

// fails runs a command that must exit with code and write want to stderr.
func (c *cliRegion) fails(node int, cert [2]string, code int, want string, args ...string) {
	c.t.Helper()
	_, errOut, got := c.run(node, cert, args...)
	if got != code || !strings.Contains(errOut, want) {
		c.t.Fatalf("krypton %s: exit %d, stderr %q; want exit %d and %q", strings.Join(args, " "), got, errOut, code, want)
	}
}

// waitApplied waits, through `krypton status`, until every node serves and has applied what the
// leader has applied (applied_index counts state machine entries only, so it is compared with the
// leader's applied_index, not its commit_index): reads (describe, list) and wraps are served from a node's own applied state, so a
// write forwarded to the leader is not yet visible on a follower when the write returns.
func (c *cliRegion) waitApplied() {
	c.t.Helper()
	type status struct {
		AppliedIndex uint64 `json:"applied_index,string"`
		Lease        string `json:"lease_state"`
	}
	var ld status
	c.okJSON(c.r.Leader(), c.op, &ld, "status")
	deadline := time.Now().Add(10 * time.Second)
	for i := range 3 {
		for {
			var st status
			c.okJSON(i, c.op, &st, "status")
			if st.AppliedIndex >= ld.AppliedIndex && st.Lease == "LEASE_STATE_SERVING" {
				break
			}
			if time.Now().After(deadline) {
				c.t.Fatalf("node %d applied %d (lease %s), the leader %d", i, st.AppliedIndex, st.Lease, ld.AppliedIndex)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
}

func TestCLIEndToEnd(t *testing.T) {
	c := startCLIRegion(t)
	leader := c.r.Leader()
	follower := c.r.Followers()[0]

	// Cluster views: three members alive, three voters, one leader, from any node.
	var members struct {
		Members []struct {
			NodeID     string `json:"node_id"`
			APIAddress string `json:"api_address"`
			Status     string `json:"status"`
		} `json:"members"`
	}
	c.okJSON(follower, c.op, &members, "members")
	if len(members.Members) != 3 {
		t.Fatalf("members: %d, want 3", len(members.Members))
	}
	for _, m := range members.Members {
		if m.Status != "MEMBER_STATUS_ALIVE" || m.APIAddress == "" {
			t.Errorf("member %+v: want alive with an API address", m)
		}
	}
	if out := c.ok(leader, c.op, "members"); strings.Count(out, "alive") != 3 || !strings.HasPrefix(out, "Node") {
		t.Errorf("members text:\n%s", out)
	}
	var peers struct {
		Peers []struct {
			NodeID   string `json:"node_id"`
			Suffrage string `json:"suffrage"`
			Leader   bool   `json:"leader"`
		} `json:"peers"`
	}
	c.okJSON(follower, c.op, &peers, "operator", "raft", "list-peers")
	leaders := 0
	for _, p := range peers.Peers {
		if p.Suffrage != "SUFFRAGE_VOTER" {
			t.Errorf("peer %+v is not a voter", p)
		}
		if p.Leader {
			leaders++
			if p.NodeID != c.r.Cfgs[leader].NodeID {
				t.Errorf("list-peers names %s the leader, want %s", p.NodeID, c.r.Cfgs[leader].NodeID)
			}
		}
	}
	if len(peers.Peers) != 3 || leaders != 1 {
		t.Fatalf("list-peers: %+v, want three voters and one leader", peers.Peers)
	}
	if out := c.ok(leader, c.op, "operator", "raft", "list-peers"); strings.Count(out, "leader") != 1 || strings.Count(out, "true") != 3 {
		t.Errorf("list-peers text:\n%s", out)
	}
	var st struct {
		NodeID    string `json:"node_id"`
		RaftState string `json:"raft_state"`
		Lease     string `json:"lease_state"`
	}
	c.okJSON(follower, c.op, &st, "status")
	if st.NodeID != c.r.Cfgs[follower].NodeID || st.RaftState != "RAFT_STATE_FOLLOWER" || st.Lease != "LEASE_STATE_SERVING" {
		t.Errorf("status: %+v", st)
	}

	// Tenants, created on a follower (forwarded to the leader); a retry with the same -request-id
	// returns the original result, a new command for the same tenant is refused.
	c.ok(follower, c.op, "tenant", "create", "-anchor", c.r.Anchor, "-request-id", "create-acme-1", "acme")
	c.ok(leader, c.op, "tenant", "create", "-anchor", c.r.Anchor, "-request-id", "create-acme-1", "acme")
	c.fails(leader, c.op, 1, "krypton: AlreadyExists: ", "tenant", "create", "-anchor", c.r.Anchor, "acme")
	var tenants struct {
		Tenants []struct {
			Name  string `json:"name"`
			State string `json:"state"`
		} `json:"tenants"`
	}
	c.waitApplied()
	c.okJSON(follower, c.op, &tenants, "tenant", "list")
	if len(tenants.Tenants) != 1 || tenants.Tenants[0].Name != "acme" || tenants.Tenants[0].State != "TENANT_STATE_ACTIVE" {
		t.Fatalf("tenant list: %+v", tenants)
	}
	if out := c.ok(leader, c.op, "tenant", "list"); !strings.Contains(out, "acme") || !strings.Contains(out, "active") {
		t.Errorf("tenant list text:\n%s", out)
	}

	// Keys: create, rotate, describe.
	c.ok(follower, c.op, "key", "create", "acme", "payments")
	c.ok(follower, c.op, "key", "create", "acme", "ledger")
	c.ok(leader, c.op, "key", "rotate", "acme", "payments")
	c.waitApplied()
	var key struct {
		CurrentVersion int `json:"current_version"`
		Versions       []struct {
			Version int    `json:"version"`
			State   string `json:"state"`
		} `json:"versions"`
	}
	c.okJSON(follower, c.op, &key, "key", "describe", "acme", "payments")
	if key.CurrentVersion != 2 || len(key.Versions) != 2 || key.Versions[0].State != "KEY_STATE_DECRYPT_ONLY" || key.Versions[1].State != "KEY_STATE_ACTIVE" {
		t.Fatalf("key describe after a rotation: %+v", key)
	}
	if out := c.ok(leader, c.op, "key", "list", "acme"); !strings.Contains(out, "1 decrypt-only, 2 active") {
		t.Errorf("key list text:\n%s", out)
	}
	if out := c.ok(leader, c.op, "tenant", "describe", "acme"); !strings.Contains(out, "payments") || !strings.Contains(out, "ledger") {
		t.Errorf("tenant describe text:\n%s", out)
	}
	// An operator certificate may not use keys, and a service certificate may not administer.
	c.fails(leader, c.op, 1, "needs a service certificate", "datakey", "-key", "acme/payments")
	c.fails(leader, c.svc, 1, "needs an operator certificate", "tenant", "list")

	// Wrap on one node, unwrap on another.
	dk := make([]byte, 32)
	rand.Read(dk)
	dkFile := filepath.Join(c.dir, "dk.bin")
	if err := os.WriteFile(dkFile, dk, 0o600); err != nil {
		t.Fatal(err)
	}
	blob := strings.TrimSpace(c.ok(leader, c.svc, "wrap", "-key", "acme/payments", "-context", "order=42", "-plaintext-file", dkFile))
	if _, err := base64.StdEncoding.DecodeString(blob); err != nil {
		t.Fatalf("wrap printed %q, not base64: %v", blob, err)
	}
	out := c.ok(follower, c.svc, "unwrap", "-context", "order=42", blob)
	if strings.Contains(out, base64.StdEncoding.EncodeToString(dk)) || !strings.Contains(out, "not shown") || !strings.Contains(out, "acme/payments version 2") {
		t.Fatalf("unwrap without -out or -show-plaintext:\n%s", out)
	}
	outFile := filepath.Join(c.dir, "unwrapped.bin")
	c.ok(follower, c.svc, "unwrap", "-context", "order=42", "-out", outFile, blob)
	if got, err := os.ReadFile(outFile); err != nil || !bytes.Equal(got, dk) {
		t.Fatalf("unwrap -out wrote %x (%v), want the data key", got, err)
	}
	if fi, _ := os.Stat(outFile); fi.Mode().Perm() != 0o600 {
		t.Errorf("unwrap -out file mode %v, want 0600", fi.Mode().Perm())
	}
	c.fails(follower, c.svc, 1, "already exists", "unwrap", "-context", "order=42", "-out", outFile, blob)
	c.fails(follower, c.svc, 1, "krypton: InvalidArgument: ", "unwrap", "-context", "order=43", blob)
	c.fails(follower, c.other, 1, "krypton: PermissionDenied: ", "unwrap", "-context", "order=42", blob)

	// A data key made on a third node, shown on request, opens under another node.
	var dkRes struct {
		Blob      string `json:"blob"`
		Plaintext string `json:"plaintext"`
		Key       struct{ Version int }
	}
	third := 3 - leader - follower
	c.okJSON(third, c.svc, &dkRes, "datakey", "-key", "acme/payments", "-show-plaintext")
	var unRes struct {
		Plaintext string `json:"plaintext"`
	}
	c.okJSON(leader, c.svc, &unRes, "unwrap", "-show-plaintext", dkRes.Blob)
	if p, _ := base64.StdEncoding.DecodeString(dkRes.Plaintext); len(p) != 32 || unRes.Plaintext != dkRes.Plaintext || dkRes.Key.Version != 2 {
		t.Fatalf("datakey %+v, unwrap %+v", dkRes, unRes)
	}
	if out, _, _ := c.runFlags(third, c.svc, []string{"-format", "json"}, "datakey", "-key", "acme/payments"); strings.Contains(out, "plaintext") {
		t.Fatalf("datakey without -show-plaintext printed a plaintext:\n%s", out)
	}

	// Output that scripts use. datakey prints what its help promises, the blob, alone on its
	// line; with -show-plaintext the data key on a second line.
	out = c.ok(third, c.svc, "datakey", "-key", "acme/payments")
	if lines := strings.Split(out, "\n"); len(lines) != 2 || lines[1] != "" {
		t.Fatalf("datakey printed %q, want the blob alone on one line", out)
	} else if _, err := base64.StdEncoding.DecodeString(lines[0]); err != nil {
		t.Fatalf("datakey printed %q, not a base64 blob: %v", out, err)
	}
	out = c.ok(third, c.svc, "datakey", "-key", "acme/payments", "-show-plaintext")
	lines := strings.Split(out, "\n")
	if len(lines) != 3 || lines[2] != "" {
		t.Fatalf("datakey -show-plaintext printed %q, want the blob and the data key on two lines", out)
	}
	dkBlob, dkText := lines[0], lines[1]
	// unwrap -show-plaintext pipes into base64 -d: exactly the base64 of the key and a newline.
	out = c.ok(leader, c.svc, "unwrap", "-show-plaintext", dkBlob)
	if out != dkText+"\n" {
		t.Fatalf("unwrap -show-plaintext printed %q, want %q", out, dkText+"\n")
	}
	decode := exec.Command("base64", "-d")
	decode.Stdin = strings.NewReader(out)
	keyBytes, err := decode.Output()
	if err != nil || len(keyBytes) != 32 {
		t.Fatalf("krypton unwrap -show-plaintext | base64 -d: %d bytes, %v", len(keyBytes), err)
	}
	// -format raw: the data key's bytes themselves; the blob's bytes for datakey and wrap.
	if raw := c.ok(follower, c.svc, "unwrap", "-show-plaintext", "-format", "raw", dkBlob); raw != string(keyBytes) {
		t.Fatalf("unwrap -format raw printed %x, want %x", raw, keyBytes)
	}
	c.fails(follower, c.svc, 2, "-format raw prints the data key: add -show-plaintext", "unwrap", "-format", "raw", dkBlob)
	rawBlob := c.ok(third, c.svc, "datakey", "-key", "acme/payments", "-format", "raw")
	c.ok(leader, c.svc, "unwrap", base64.StdEncoding.EncodeToString([]byte(rawBlob)))
	rawBlob = c.ok(third, c.svc, "wrap", "-key", "acme/payments", "-plaintext-file", dkFile, "-format", "raw")
	if got := c.ok(leader, c.svc, "unwrap", "-format", "raw", "-show-plaintext", base64.StdEncoding.EncodeToString([]byte(rawBlob))); got != string(dk) {
		t.Fatalf("a raw blob from wrap did not unwrap to the data key")
	}
	// With -out, where the key went is a note on stderr: stdout keeps only the blob.
	outKey := filepath.Join(c.dir, "datakey.bin")
	o, e, code := c.run(third, c.svc, "datakey", "-key", "acme/payments", "-out", outKey)
	if code != 0 || strings.Count(o, "\n") != 1 || strings.Contains(o, outKey) || !strings.Contains(e, "data key written to "+outKey) {
		t.Fatalf("datakey -out: exit %d, stdout %q, stderr %q", code, o, e)
	}

	// A snapshot saved from a follower, restored through a follower (the command finds the leader).
	// It prints the size and SHA-256 of the file it saved, as wc -c and sha256sum would.
	snap := filepath.Join(c.dir, "region.snap")
	out = c.ok(follower, c.op, "snapshot", "save", snap)
	if !strings.Contains(out, "Saved snapshot of region test") {
		t.Errorf("snapshot save:\n%s", out)
	}
	if fi, err := os.Stat(snap); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("snapshot file: %v %v", fi, err)
	}
	saved, err := os.ReadFile(snap)
	if err != nil {
		t.Fatal(err)
	}
	fileSum := sha256.Sum256(saved)
	if want := fmt.Sprintf("(%d bytes, sha256 %x)", len(saved), fileSum); !strings.Contains(out, want) {
		t.Errorf("snapshot save printed %q; the saved file is %s", out, want)
	}
	var snapJSON struct {
		Size   int64  `json:"size"`
		Sha256 string `json:"sha256"`
	}
	c.okJSON(follower, c.op, &snapJSON, "snapshot", "save", snap)
	saved, _ = os.ReadFile(snap)
	if fileSum = sha256.Sum256(saved); snapJSON.Size != int64(len(saved)) || snapJSON.Sha256 != hex.EncodeToString(fileSum[:]) {
		t.Errorf("snapshot save -format json: %+v; the saved file is %d bytes, sha256 %x", snapJSON, len(saved), fileSum)
	}
	var restored struct {
		Index string `json:"index"`
	}
	c.okJSON(follower, c.op, &restored, "snapshot", "restore", snap)
	if restored.Index == "" || restored.Index == "0" {
		t.Errorf("snapshot restore: index %q", restored.Index)
	}
	// A damaged snapshot is refused before anything is sent.
	b, _ := os.ReadFile(snap)
	b[len(b)/2] ^= 1
	damaged := filepath.Join(c.dir, "damaged.snap")
	os.WriteFile(damaged, b, 0o600)
	c.fails(leader, c.op, 1, "krypton: ", "snapshot", "restore", damaged)
	c.waitApplied()

	// Revoke: the fence is reported, then unwrap fails with FailedPrecondition everywhere.
	out = c.ok(follower, c.op, "key", "revoke", "-reason", "test", "acme", "payments")
	if !strings.Contains(out, "Revoked acme/payments") || !strings.Contains(out, "confirmed (applied it)") {
		t.Fatalf("revoke:\n%s", out)
	}
	// A node whose lease lapsed (a restore, or a slow -race run) refuses with Unavailable until it
	// serves again; what it must never do is unwrap.
	for i := range 3 {
		deadline := time.Now().Add(10 * time.Second)
		for {
			_, errOut, code := c.run(i, c.svc, "unwrap", "-context", "order=42", blob)
			if code == 1 && strings.HasPrefix(errOut, "krypton: FailedPrecondition: ") {
				break
			}
			if code != 1 || !strings.HasPrefix(errOut, "krypton: Unavailable: ") || time.Now().After(deadline) {
				t.Fatalf("unwrap on node %d after revoke: exit %d, %q; want FailedPrecondition", i, code, errOut)
			}
			time.Sleep(100 * time.Millisecond)
		}
	}
	// The other service's key still works.
	c.ok(leader, c.other, "datakey", "-key", "acme/ledger")

	// A lockout is fenced as a revocation is, and lifted by unlock.
	out = c.ok(follower, c.op, "tenant", "lock", "-reason", "incident 7", "acme")
	if !strings.Contains(out, "Locked tenant acme") || !strings.Contains(out, "confirmed (applied it)") {
		t.Fatalf("tenant lock:\n%s", out)
	}
	c.fails(third, c.other, 1, "krypton: FailedPrecondition: ", "datakey", "-key", "acme/ledger")
	if out := c.ok(leader, c.op, "tenant", "describe", "acme"); !strings.Contains(out, "locked") || !strings.Contains(out, "incident 7") {
		t.Errorf("tenant describe of a locked tenant:\n%s", out)
	}
	c.ok(follower, c.op, "tenant", "unlock", "acme")
	c.waitApplied()
	c.ok(third, c.other, "datakey", "-key", "acme/ledger")

	// Leadership moves where it is asked to. (The response's leader_id can be empty: the node that
	// answers may not know the new leader yet, so list-peers is the check.)
	target := c.r.Cfgs[follower].NodeID
	c.ok(third, c.op, "operator", "raft", "transfer-leader", target)
	deadline := time.Now().Add(10 * time.Second)
	for {
		c.okJSON(third, c.op, &peers, "operator", "raft", "list-peers")
		var got []string
		for _, p := range peers.Peers {
			if p.Leader {
				got = append(got, p.NodeID)
			}
		}
		if len(got) == 1 && got[0] == target {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after transfer-leader %s, list-peers names leaders %v", target, got)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestClientExitCodes checks the exit codes the script tests cannot see: 2 for a usage mistake,
// 1 for a failure. No server is needed: every case fails before a call, or at an unreachable one.
func TestClientExitCodes(t *testing.T) {
	dir := t.TempDir()
	ca, err := pki.NewCA("test CA", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	caFile := filepath.Join(dir, "ca.pem")
	if err := os.WriteFile(caFile, ca.CertPEM(), 0o600); err != nil {
		t.Fatal(err)
	}
	op, err := ca.IssueOperator("alice", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	opCert, opKey := filepath.Join(dir, "op.pem"), filepath.Join(dir, "op-key.pem")
	if err := op.WriteFiles(opCert, opKey); err != nil {
		t.Fatal(err)
	}
	conn := []string{"-addr", "127.0.0.1:1", "-timeout", "5s", "-ca-cert", caFile, "-client-cert", opCert, "-client-key", opKey}
	with := func(cmd []string, rest ...string) []string {
		return append(append(append([]string{}, cmd...), conn...), rest...)
	}
	for _, tc := range []struct {
		args []string
		code int
		want string
	}{
		{[]string{"members", "-ca-cert", caFile}, 2, "krypton: -client-cert is required"},
		{with([]string{"members"}, "-format", "yaml"), 2, `krypton: unknown -format "yaml"`},
		{with([]string{"key", "revoke"}, "-reason", "x", "acme", "payments", "v2"), 2, "<version> must be a positive integer"},
		{with([]string{"operator", "raft", "remove-peer"}), 2, "want <node-id>"},
		{with([]string{"status"}, "-timeout", "0s"), 2, "-timeout must be positive"},
		{[]string{"tenant", "list", "-ca-cert", filepath.Join(dir, "none.pem"), "-client-cert", opCert, "-client-key", opKey}, 1, "krypton: -ca-cert: stat "},
		{with([]string{"datakey"}, "-key", "acme/payments"), 1, "this command needs a service certificate"},
		{with([]string{"status"}), 1, "krypton: Unavailable: cannot reach 127.0.0.1:1"},
		{with([]string{"snapshot", "restore"}, caFile), 1, "not a krypton snapshot"},
	} {
		stdout, _ := os.CreateTemp(dir, "stdout")
		stderr, _ := os.CreateTemp(dir, "stderr")
		code := run(context.Background(), tc.args, stdout, stderr)
		errOut := readBack(t, stderr)
		readBack(t, stdout)
		if code != tc.code || !strings.Contains(errOut, tc.want) {
			t.Errorf("krypton %s: exit %d, stderr %q; want exit %d and %q", strings.Join(tc.args, " "), code, errOut, tc.code, tc.want)
		}
	}
}
