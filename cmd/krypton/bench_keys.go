package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/cmd/krypton/internal/bench"
	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// maxBenchConns bounds -conns: each connection is a file descriptor on both sides (both in this
// process with -spawn), so 10,000 needs RLIMIT_NOFILE above 20,000 (raiseLimits).
const maxBenchConns = 10000

// benchSetupKeys is benchSetup for a run over n keys (-keys): tenant bench is created through the
// development region's governance, with a policy that lets the service certificate bench/load use
// every service of the tenant (docs/identity.md: a service certificate names one service; a policy
// grants it others), then bench/load and bench/load-1 ... bench/load-(n-1) are created on the
// leader, many at a time. It returns a client configuration with the bench/load certificate.
func (d *devRegion) benchSetupKeys(ctx context.Context, n int, logw io.Writer) (transport.ClientConfig, error) {
	ownerPub, err := d.ownerKey()
	if err != nil {
		return transport.ClientConfig{}, err
	}
	govConn, err := d.dialAddr(d.gov.Addr(), pki.Identity{Kind: pki.KindGovernance}, d.operator[0], d.operator[1])
	if err != nil {
		return transport.ClientConfig{}, err
	}
	defer govConn.Close()
	gov := kv1.NewGovernanceServiceClient(govConn)
	if _, err := retryWrite(ctx, func() (*kv1.GovernanceTenant, error) {
		return gov.CreateTenant(ctx, &kv1.GovernanceCreateTenantRequest{RequestId: "bench-tenant", Tenant: benchTenant, AnchorUri: d.anchorURI, Regions: []string{devRegionName}, OwnerPublicKey: ownerPub})
	}); err != nil && status.Code(err) != codes.AlreadyExists {
		return transport.ClientConfig{}, fmt.Errorf("bench: creating tenant %s through governance: %w", benchTenant, err)
	}
	caller := "spiffe://krypton/tenant/" + benchTenant + "/service/" + benchService
	if _, err := retryWrite(ctx, func() (*kv1.Policy, error) {
		return gov.SetPolicy(ctx, &kv1.SetPolicyRequest{RequestId: "bench-policy", Policy: &kv1.Policy{Tenant: benchTenant, Rules: []*kv1.PolicyRule{{
			Caller: caller, Service: "*",
			Operations: []kv1.Operation{kv1.Operation_OPERATION_WRAP, kv1.Operation_OPERATION_UNWRAP, kv1.Operation_OPERATION_GENERATE_DATA_KEY, kv1.Operation_OPERATION_REWRAP},
		}}}})
	}); err != nil {
		return transport.ClientConfig{}, fmt.Errorf("bench: setting the policy of %s: %w", benchTenant, err)
	}
	if err := poll(ctx, time.Minute, "every node to hold tenant "+benchTenant+" and its policy", func() bool {
		for _, nd := range d.nodes {
			if p, err := nd.State().Policy(benchTenant); err != nil || p.Revision == 0 {
				return false
			}
		}
		return true
	}); err != nil {
		return transport.ClientConfig{}, err
	}

	// Many writes in flight at once: Raft batches them into few log appends.
	start := time.Now()
	var next, done atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 1)
	for range 64 {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				svc := benchService
				if i > 0 {
					svc = bench.KeyName(benchService, i)
				}
				_, err := retryWrite(ctx, func() (struct{}, error) {
					l := d.leader()
					if l < 0 {
						return struct{}{}, status.Error(codes.Unavailable, "no leader")
					}
					_, err := d.nodes[l].CreateKey(ctx, "bench-key-"+strconv.Itoa(i), benchTenant, svc)
					return struct{}{}, err
				})
				if err != nil && status.Code(err) != codes.AlreadyExists {
					select {
					case errs <- fmt.Errorf("bench: creating key %s/%s: %w", benchTenant, svc, err):
					default:
					}
					return
				}
				if c := done.Add(1); c%2000 == 0 && int(c) < n {
					fmt.Fprintf(logw, "krypton: %d of %d keys created\n", c, n)
				}
			}
		})
	}
	wg.Wait()
	select {
	case err := <-errs:
		return transport.ClientConfig{}, err
	default:
	}
	last := benchService
	if n > 1 {
		last = bench.KeyName(benchService, n-1)
	}
	if err := poll(ctx, time.Minute, "every node to hold the bench keys", func() bool {
		for _, nd := range d.nodes {
			if _, err := nd.State().Service(benchTenant, last); err != nil {
				return false
			}
		}
		return true
	}); err != nil {
		return transport.ClientConfig{}, err
	}
	fmt.Fprintf(logw, "krypton: %d keys of tenant %s created in %s\n", n, benchTenant, time.Since(start).Round(time.Millisecond))
	cert, err := d.ca.IssueService(benchTenant, benchService, 24*time.Hour)
	if err != nil {
		return transport.ClientConfig{}, err
	}
	return transport.ClientConfig{Roots: d.ca.Pool(), Certificate: cert.TLSCertificate()}, nil
}

// raiseLimits lifts this process's RLIMIT_NOFILE where a run needs more open files than it
// allows: conns connections, twice (with -spawn both ends are in this process), and room for the
// rest. It raises the hard limit too when it may (root); when it cannot it says so and the run goes
// on (a dial then fails with the limit's error). Locked memory is not raised here: the process's
// budget is read once at start (wrap/locked.go); a -keyring-size that does not fit refuses to start.
func raiseLimits(w io.Writer, conns int) {
	raise := func(res int, name string, want uint64) {
		var l syscall.Rlimit
		if err := syscall.Getrlimit(res, &l); err != nil || l.Cur == ^uint64(0) || l.Cur >= want {
			return
		}
		nl := syscall.Rlimit{Cur: want, Max: max(l.Max, want)}
		if err := syscall.Setrlimit(res, &nl); err != nil {
			nl = syscall.Rlimit{Cur: min(want, l.Max), Max: l.Max}
			if err := syscall.Setrlimit(res, &nl); err != nil || nl.Cur < want {
				fmt.Fprintf(w, "krypton: %s is %d, the run wants %d (raise it: ulimit, systemd Limit*=)\n", name, l.Cur, want)
			}
		}
	}
	raise(syscall.RLIMIT_NOFILE, "RLIMIT_NOFILE", uint64(2*conns+4096))
}

// startCPUProfile starts Go's CPU profiler writing to path (-cpuprofile) and returns its stop.
func startCPUProfile(path string) (func(), error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, fmt.Errorf("-cpuprofile: %w", err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, fmt.Errorf("-cpuprofile: %w", err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}
