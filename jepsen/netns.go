//go:build linux

package jepsen

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"

	"golang.org/x/sys/unix"
)

// Namespaces are named nsPrefix<pid>x<seq>-<role>, so that a later run can tell its own from a
// crashed run's (the pid is gone) and delete those.
const nsPrefix = "kj"

var nsSeq atomic.Int64

// netnsNet is the root-only network: one namespace per node ("-n<i>", the node's eth0 at
// 10.213.<i+1>.2) and one control namespace ("-c") that routes between them (10.213.<i+1>.1 on
// its side of each veth pair) and holds the clients. Every packet between two nodes crosses the
// control namespace's forward hook, where the nftables rules of the partition nemeses sit; each
// node keeps its own source address, so a rule on a pair of addresses is a rule on a pair of
// nodes. (On one shared loopback a node's outgoing connections would leave from 127.0.0.1, and a
// pair rule could not tell who sent a packet.)
type netnsNet struct {
	base    string
	n       int
	nsFD    *os.File // the control namespace, for dial
	netem   bool     // the kernel has sch_netem
	mu      sync.Mutex
	closed  bool
	created []string
}

func (w *netnsNet) ctl() string        { return w.base + "-c" }
func (w *netnsNet) node(i int) string  { return w.base + "-n" + strconv.Itoa(i+1) }
func (w *netnsNet) name() string       { return "netns" }
func (w *netnsNet) canPartition() bool { return true }
func (w *netnsNet) host(i int) string  { return fmt.Sprintf("10.213.%d.2", i+1) }
func (w *netnsNet) port(_, kind int) int {
	return [4]int{7400, 7410, 7420, 7430}[kind]
}
func (w *netnsNet) wrap(i int, argv []string) []string {
	return append([]string{"ip", "netns", "exec", w.node(i)}, argv...)
}

func run(argv ...string) error {
	cmd := exec.Command(argv[0], argv[1:]...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("jepsen: %s: %v: %s", strings.Join(argv, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

// cleanStaleNamespaces deletes namespaces of earlier runs whose process is gone, killing whatever
// still runs in them.
func cleanStaleNamespaces() {
	out, err := exec.Command("ip", "netns", "list").Output()
	if err != nil {
		return
	}
	re := regexp.MustCompile(`^` + nsPrefix + `(\d+)x\d+-(c|n\d+)\b`)
	for _, line := range strings.Split(string(out), "\n") {
		m := re.FindStringSubmatch(strings.TrimSpace(line))
		if m == nil {
			continue
		}
		pid, _ := strconv.Atoi(m[1])
		if pid == os.Getpid() || syscall.Kill(pid, 0) == nil {
			continue // ours, or a live run's
		}
		ns := strings.Fields(line)[0]
		killNamespace(ns)
		_ = run("ip", "netns", "del", ns)
	}
}

// killNamespace SIGKILLs every process in namespace ns (stray nodes of a crashed run).
func killNamespace(ns string) {
	out, _ := exec.Command("ip", "netns", "pids", ns).Output()
	for _, f := range strings.Fields(string(out)) {
		if pid, err := strconv.Atoi(f); err == nil && pid != os.Getpid() {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

func newNetnsNet(n int) (_ *netnsNet, err error) {
	cleanStaleNamespaces()
	w := &netnsNet{base: fmt.Sprintf("%s%dx%d", nsPrefix, os.Getpid(), nsSeq.Add(1)), n: n}
	defer func() {
		if err != nil {
			w.close()
		}
	}()
	add := func(ns string) error {
		if err := run("ip", "netns", "add", ns); err != nil {
			return err
		}
		w.created = append(w.created, ns)
		return run("ip", "-n", ns, "link", "set", "lo", "up")
	}
	if err := add(w.ctl()); err != nil {
		return nil, err
	}
	if err := run("ip", "netns", "exec", w.ctl(), "sysctl", "-q", "-w", "net.ipv4.ip_forward=1"); err != nil {
		return nil, err
	}
	for i := range n {
		ns := w.node(i)
		if err := add(ns); err != nil {
			return nil, err
		}
		veth := "v" + strconv.Itoa(i+1)
		steps := [][]string{
			{"ip", "link", "add", veth, "netns", w.ctl(), "type", "veth", "peer", "name", "eth0", "netns", ns},
			{"ip", "-n", w.ctl(), "addr", "add", fmt.Sprintf("10.213.%d.1/24", i+1), "dev", veth},
			{"ip", "-n", ns, "addr", "add", w.host(i) + "/24", "dev", "eth0"},
			{"ip", "-n", w.ctl(), "link", "set", veth, "up"},
			{"ip", "-n", ns, "link", "set", "eth0", "up"},
			{"ip", "-n", ns, "route", "add", "default", "via", fmt.Sprintf("10.213.%d.1", i+1)},
		}
		for _, s := range steps {
			if err := run(s...); err != nil {
				return nil, err
			}
		}
	}
	if err := w.heal(); err != nil {
		return nil, err
	}
	// netem is a module the kernel may lack (it does in some sandboxes); without it slow links
	// only lose packets.
	w.netem = run("ip", "netns", "exec", w.ctl(), "tc", "qdisc", "add", "dev", "v1", "root", "netem", "delay", "1ms") == nil
	if w.netem {
		_ = run("ip", "netns", "exec", w.ctl(), "tc", "qdisc", "del", "dev", "v1", "root")
	}
	f, err := os.Open(filepath.Join("/var/run/netns", w.ctl()))
	if err != nil {
		return nil, fmt.Errorf("jepsen: opening the control namespace: %w", err)
	}
	w.nsFD = f
	return w, nil
}

// dial connects from inside the control namespace: on a locked OS thread that enters the
// namespace (setns) just to create the socket, which stays in that namespace for its life. The
// thread is never unlocked, so the runtime throws it away when the goroutine ends, and no other
// goroutine ever runs in the wrong namespace.
func (w *netnsNet) dial(ctx context.Context, addr string) (net.Conn, error) {
	type result struct {
		c   net.Conn
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		if err := unix.Setns(int(w.nsFD.Fd()), unix.CLONE_NEWNET); err != nil {
			ch <- result{nil, fmt.Errorf("jepsen: setns: %w", err)}
			return
		}
		var d net.Dialer
		c, err := d.DialContext(ctx, "tcp", addr)
		ch <- result{c, err}
	}()
	r := <-ch
	return r.c, r.err
}

// The rules: one table in the control namespace, one forward chain; heal replaces it.
func (w *netnsNet) nft(script string) error {
	cmd := exec.Command("ip", "netns", "exec", w.ctl(), "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("jepsen: nft: %v: %s", err, out)
	}
	return nil
}

func (w *netnsNet) drop(a, b int) error {
	return w.nft(fmt.Sprintf("add rule inet jepsen faults ip saddr %s ip daddr %s drop\n", w.host(a), w.host(b)))
}

func (w *netnsNet) slow(i, lossPct, delayMs int) error {
	if lossPct > 0 {
		if err := w.nft(fmt.Sprintf("add rule inet jepsen faults ip saddr %[1]s numgen random mod 100 < %[2]d drop\nadd rule inet jepsen faults ip daddr %[1]s numgen random mod 100 < %[2]d drop\n", w.host(i), lossPct)); err != nil {
			return err
		}
	}
	if delayMs <= 0 {
		return nil
	}
	if w.netem {
		return run("ip", "netns", "exec", w.ctl(), "tc", "qdisc", "replace", "dev", "v"+strconv.Itoa(i+1), "root", "netem", "delay", fmt.Sprintf("%dms", delayMs), fmt.Sprintf("%dms", delayMs/4))
	}
	// Without netem, a token bucket on both ends of the node's link: a narrow link whose queue
	// delays packets under load (up to the latency bound) and drops beyond it.
	for _, at := range [][2]string{{w.ctl(), "v" + strconv.Itoa(i+1)}, {w.node(i), "eth0"}} {
		if err := run("ip", "netns", "exec", at[0], "tc", "qdisc", "replace", "dev", at[1], "root", "tbf", "rate", "2mbit", "burst", "16kb", "latency", fmt.Sprintf("%dms", 4*delayMs)); err != nil {
			return err
		}
	}
	return nil
}

func (w *netnsNet) heal() error {
	// "add table" then "delete table" makes the delete succeed whether or not it existed.
	err := w.nft("add table inet jepsen\ndelete table inet jepsen\nadd table inet jepsen\nadd chain inet jepsen faults { type filter hook forward priority 0; policy accept; }\n")
	for i := range w.n {
		// Deleting a root qdisc that was never added fails harmlessly.
		_ = run("ip", "netns", "exec", w.ctl(), "tc", "qdisc", "del", "dev", "v"+strconv.Itoa(i+1), "root")
		_ = run("ip", "netns", "exec", w.node(i), "tc", "qdisc", "del", "dev", "eth0", "root")
	}
	return err
}

func (w *netnsNet) close() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.closed {
		return nil
	}
	w.closed = true
	if w.nsFD != nil {
		w.nsFD.Close()
	}
	var first error
	for i := len(w.created) - 1; i >= 0; i-- {
		killNamespace(w.created[i])
		if err := run("ip", "netns", "del", w.created[i]); err != nil && first == nil {
			first = err
		}
	}
	return first
}
