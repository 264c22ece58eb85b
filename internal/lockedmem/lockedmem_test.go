package lockedmem

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/region"
	"github.com/kryptonkms/krypton/region/regiontest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
	"github.com/kryptonkms/krypton/wrap"
)

// childEnv marks the re-executed test binary that runs TestLockedMemoryChild for real.
const childEnv = "KRYPTON_LOCKEDMEM_CHILD"

// childDone is the last line the child prints when every check passed: a child that ran no test
// (a -test.run typo) or died without a Go failure cannot pass for one that succeeded.
const childDone = "LOCKEDMEM-CHILD-DONE"

// budgetPages is how many pages the child's budget holds beyond wrap.LockedMargin.
const budgetPages = 192

// TestLockedMemoryExhaustion re-executes this test binary as TestLockedMemoryChild under a small
// RLIMIT_MEMLOCK (prlimit), without CAP_IPC_LOCK (setpriv: root holds it, and with it the kernel
// ignores the limit), and requires the child to pass. What the child checks is in its comment.
func TestLockedMemoryExhaustion(t *testing.T) {
	page := os.Getpagesize()
	limit := wrap.LockedMargin + budgetPages*page
	prlimit, err := exec.LookPath("prlimit")
	if err != nil {
		t.Fatalf("prlimit (Debian package util-linux) is needed: %v", err)
	}
	args := []string{prlimit, fmt.Sprintf("--memlock=%d:%d", limit, limit)}
	if hasIPCLock(t) {
		setpriv, err := exec.LookPath("setpriv")
		if err != nil {
			t.Fatalf("setpriv (Debian package util-linux) is needed to drop CAP_IPC_LOCK: %v", err)
		}
		// Root's permitted set after exec is its inheritable set plus its bounding set: drop the
		// capability from both.
		args = append(args, setpriv, "--inh-caps=-ipc_lock", "--bounding-set=-ipc_lock", "--")
	}
	args = append(args, os.Args[0], "-test.run=^TestLockedMemoryChild$", "-test.v", "-test.count=1", "-test.timeout=4m")
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, args[0], args[1:]...)
	cmd.Env = append(os.Environ(), childEnv+"=1")
	out, err := cmd.CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte(childDone)) {
		t.Fatalf("child under RLIMIT_MEMLOCK=%d (%s): %v\n%s", limit, strings.Join(args[:len(args)-5], " "), err, out)
	}
	for _, bad := range []string{"panic:", "ErrBufferExpired", "buffer has been purged"} {
		if bytes.Contains(out, []byte(bad)) {
			t.Fatalf("child output says %q:\n%s", bad, out)
		}
	}
	t.Logf("child passed under RLIMIT_MEMLOCK=%d bytes", limit)
}

// hasIPCLock reports whether this process holds CAP_IPC_LOCK in its effective set.
func hasIPCLock(t *testing.T) bool {
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "CapEff:"); ok {
			caps, err := strconv.ParseUint(strings.TrimSpace(v), 16, 64)
			if err != nil {
				t.Fatal(err)
			}
			return caps&(1<<unix.CAP_IPC_LOCK) != 0
		}
	}
	t.Fatal("no CapEff in /proc/self/status")
	return false
}

// TestLockedMemoryChild is the child of TestLockedMemoryExhaustion; run on its own it only says so.
// Under the parent's RLIMIT_MEMLOCK, with a budget of budgetPages pages:
//
//  1. the kernel enforces the limit (an mlock past it fails), so memguard would panic and purge;
//  2. a node whose configured keyring cannot fit refuses to start, with an error naming the fixes;
//  3. with other locked memory taking half the budget, a node whose keyring (64 + 64 keys) fitted
//     at start serves 80 tenants (160 keys): the budget evicts keys (least recently used) instead
//     of letting an mlock fail;
//  4. with the whole budget taken, a wrap that needs a new key is Unavailable ("locked memory
//     exhausted"), and a key held outside the keyring was not purged;
//  5. once the other locked memory is given back, every tenant is served again, and every blob
//     wrapped before unwraps.
func TestLockedMemoryChild(t *testing.T) {
	if os.Getenv(childEnv) == "" {
		t.Log("run by TestLockedMemoryExhaustion in a child process under prlimit")
		return
	}
	page := os.Getpagesize()
	_, limit, enforced := wrap.LockedMemory()
	if !enforced || limit != uint64(wrap.LockedMargin+budgetPages*page) {
		t.Fatalf("RLIMIT_MEMLOCK = %d, enforced %v: want %d and enforced (CAP_IPC_LOCK dropped)", limit, enforced, wrap.LockedMargin+budgetPages*page)
	}

	// 1. The limit bites: without the budget, memguard's mlock of a key would fail like this.
	mem, err := unix.Mmap(-1, 0, int(limit)+page, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANON|unix.MAP_PRIVATE)
	if err != nil {
		t.Fatal(err)
	}
	if err := unix.Mlock(mem); err == nil {
		t.Fatalf("mlock of %d bytes succeeded under RLIMIT_MEMLOCK %d: the limit does not bite", len(mem), limit)
	} else if !errors.Is(err, unix.ENOMEM) && !errors.Is(err, unix.EPERM) {
		t.Fatalf("mlock past the limit: %v, want ENOMEM or EPERM", err)
	}
	unix.Munmap(mem)

	// A key held outside any keyring: memguard's purge would destroy it.
	sentinel, err := wrap.NewServiceKey(wrap.KeyID{Tenant: "sentinel", Service: "s", Version: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer sentinel.Destroy()
	checkSentinel := func(when string) {
		t.Helper()
		dk := wrap.NewDataKey()
		defer dk.Destroy()
		blob, err := sentinel.Wrap(dk, nil)
		if err != nil {
			t.Fatalf("%s: a key held outside the keyring no longer wraps (purged?): %v", when, err)
		}
		back, err := sentinel.Unwrap(blob, nil)
		if err != nil {
			t.Fatalf("%s: unwrap under the held key: %v", when, err)
		}
		back.Destroy()
	}

	r := regiontest.Start(t, 1, regiontest.WithConfig(func(c *region.Config) { c.KeyringSize = 64 }))
	n := r.Nodes[0]

	// 2. A configured keyring that cannot fit refuses to start, naming the limit and the fixes.
	big := r.Cfgs[0]
	big.DataDir = t.TempDir()
	big.KeyringSize = 1000
	if bad, err := region.New(big); err == nil {
		bad.Shutdown()
		t.Fatal("a node with a keyring of 1000 + 1000 pages started under a budget of 192 pages")
	} else {
		for _, want := range []string{"RLIMIT_MEMLOCK", "ulimit -l", "LimitMEMLOCK=", "-keyring-size"} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("refusal %q does not say %q", err, want)
			}
		}
	}

	ctx := func() context.Context {
		c, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		t.Cleanup(cancel)
		return c
	}
	type wrapped struct{ tenant, plain, blob []byte }
	clients := map[string]kv1.WrapServiceClient{}
	client := func(tenant string) kv1.WrapServiceClient {
		if clients[tenant] == nil {
			clients[tenant] = r.WrapClient(0, tenant, "s")
		}
		return clients[tenant]
	}
	wrapAs := func(tenant string) (wrapped, error) {
		w := wrapped{tenant: []byte(tenant), plain: make([]byte, 32)}
		rand.Read(w.plain)
		resp, err := client(tenant).Wrap(ctx(), &kv1.WrapRequest{Key: &kv1.KeyRef{Tenant: tenant, Service: "s"}, Plaintext: bytes.Clone(w.plain)})
		w.blob = resp.GetBlob()
		return w, err
	}
	unwrapAs := func(w wrapped) error {
		resp, err := client(string(w.tenant)).Unwrap(ctx(), &kv1.UnwrapRequest{Blob: w.blob})
		if err == nil && !bytes.Equal(resp.GetPlaintext(), w.plain) {
			return errors.New("unwrap returned other bytes")
		}
		return err
	}
	create := func(tenant string) {
		t.Helper()
		if _, err := n.CreateTenant(ctx(), "create-"+tenant, tenant, r.Anchor); err != nil {
			t.Fatalf("CreateTenant %s: %v", tenant, err)
		}
		if _, err := n.CreateKey(ctx(), "key-"+tenant, tenant, "s"); err != nil {
			t.Fatalf("CreateKey %s/s: %v", tenant, err)
		}
	}

	// 3. Other locked memory takes 100 pages; 80 tenants need 160 keys where about 90 fit.
	ballast, err := wrap.NewLockedBuffer(100 * page)
	if err != nil {
		t.Fatal(err)
	}
	defer ballast.Destroy()
	const tenants = 80
	var blobs []wrapped
	for i := range tenants {
		tenant := "t" + strconv.Itoa(i)
		create(tenant)
		w, err := wrapAs(tenant)
		if err != nil {
			t.Fatalf("wrap as %s with room to evict: %v", tenant, err)
		}
		blobs = append(blobs, w)
	}
	if got := metric(t, n, "krypton_keyring_pressure_evictions_total"); got == 0 {
		t.Fatal("no key was given back to the budget: the test did not push past the limit")
	}
	checkLocked(t, "after the flood")
	checkSentinel("after the flood")

	// 4. Everything else is taken: the keyring gives back all it holds, and a wrap that needs a
	// key is Unavailable.
	used, _, _ := wrap.LockedMemory()
	rest := int64(limit) - wrap.LockedMargin - used
	full, err := wrap.NewLockedBuffer(int(rest) + 40*page) // 40 pages more than free: keys are evicted
	if err != nil {
		t.Fatalf("taking the rest of the budget (keys to evict): %v", err)
	}
	defer full.Destroy()
	// Then a page at a time, each evicting a key, until the keyring has nothing left to give.
	var pages []*wrap.LockedBuffer
	defer func() {
		for _, p := range pages {
			p.Destroy()
		}
	}()
	for {
		p, err := wrap.NewLockedBuffer(page)
		if errors.Is(err, wrap.ErrLockedMemory) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(pages) > 2*64 {
			t.Fatalf("%d pages past a full budget and still no ErrLockedMemory", len(pages))
		}
		pages = append(pages, p)
	}
	t.Logf("budget full: %d pages taken one by one after the rest", len(pages))
	_, err = wrapAs("t" + strconv.Itoa(tenants/2))
	if status.Code(err) != codes.Unavailable || !strings.Contains(err.Error(), "locked memory exhausted") {
		t.Fatalf("wrap with the budget full: %v, want Unavailable, locked memory exhausted", err)
	}
	if got := metric(t, n, "krypton_locked_memory_bytes"); int64(got) != int64(limit)-wrap.LockedMargin {
		t.Fatalf("krypton_locked_memory_bytes = %v with the budget full, want %d", got, int64(limit)-wrap.LockedMargin)
	}
	checkLocked(t, "with the budget full")
	checkSentinel("with the budget full")

	// 5. The load drops: every tenant is served again and every blob unwraps.
	full.Destroy()
	for _, p := range pages {
		p.Destroy()
	}
	for _, w := range blobs {
		if err := unwrapAs(w); err != nil {
			t.Fatalf("unwrap as %s after the load dropped: %v", w.tenant, err)
		}
	}
	for i := range tenants {
		if _, err := wrapAs("t" + strconv.Itoa(i)); err != nil {
			t.Fatalf("wrap as t%d after the load dropped: %v", i, err)
		}
	}
	checkLocked(t, "after the load dropped")
	checkSentinel("after the load dropped")
	fmt.Println(childDone)
}

// checkLocked compares the kernel's count of the process's locked memory (VmLck) with the limit.
func checkLocked(t *testing.T, when string) {
	t.Helper()
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	_, limit, _ := wrap.LockedMemory()
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmLck:"); ok {
			kb, err := strconv.ParseUint(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			if err != nil {
				t.Fatal(err)
			}
			if kb<<10 > limit {
				t.Fatalf("%s: VmLck %d KiB past RLIMIT_MEMLOCK %d KiB", when, kb, limit>>10)
			}
			t.Logf("%s: VmLck %d KiB of %d KiB", when, kb, limit>>10)
			return
		}
	}
	t.Fatal("no VmLck in /proc/self/status")
}

// metric reads a gauge or counter (summed over labels) from the node's registry.
func metric(t *testing.T, n *region.Node, name string) float64 {
	t.Helper()
	mfs, err := n.Registry().Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
		var sum float64
		for _, m := range mf.GetMetric() {
			sum += m.GetGauge().GetValue() + m.GetCounter().GetValue()
		}
		return sum
	}
	t.Fatalf("no metric %s", name)
	return 0
}
