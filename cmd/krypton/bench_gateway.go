package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/cmd/krypton/internal/bench"
	"github.com/kryptonkms/krypton/gateway"
	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
	"github.com/kryptonkms/krypton/wrap"
)

// gatewayBench holds bench's gateway flags: load a running gateway (-gateway), or one started in
// front of the region (-spawn-gateway), in this process or (-gateway-process) as a krypton
// gateway process of its own, whose CPU is then reported.
type gatewayBench struct {
	addr      string // host:port (gRPC with TLS), unix:PATH (gRPC on the socket), framed:PATH
	pid       int    // -gateway-pid: the running gateway's process, for its CPU
	spawn     bool
	process   bool   // -gateway-process
	front     string // -gateway-front: tls, unix or framed
	batch     int
	batchWait time.Duration
	payload   int  // -gateway-payload: bytes per Encrypt
	encrypt   bool // -op encrypt: run as datakey, each call an Encrypt of payload bytes
}

// op maps -op for the load generator: through a gateway, encrypt runs the datakey load with
// every GenerateDataKey turned into an Encrypt (the gateway makes a data key, has it wrapped,
// and seals the payload), and is reported as encrypt.
func (b *gatewayBench) op(op string) string {
	if b.enabled() && op == "encrypt" {
		b.encrypt = true
		return string(bench.OpDataKey)
	}
	return op
}

// relabel names an encrypt run's figures after what was measured.
func (b *gatewayBench) relabel(r *bench.Result) {
	if !b.encrypt {
		return
	}
	r.Config.Op, r.Total.Op = "encrypt", "encrypt"
	for i := range r.ByOp {
		r.ByOp[i].Op = "encrypt"
	}
}

func (b *gatewayBench) enabled() bool { return b.addr != "" || b.spawn }

// onSocket says whether a running gateway is loaded on its Unix socket, where no certificate is
// presented (the socket file's mode is the access control).
func (b *gatewayBench) onSocket() bool {
	return strings.HasPrefix(b.addr, "unix:") || strings.HasPrefix(b.addr, "framed:")
}

// check validates the gateway flags against the rest of bench's.
func (b *gatewayBench) check(o *benchOptions) error {
	if !b.enabled() {
		if b.pid != 0 || b.process {
			return usagef("-gateway-pid goes with -gateway, -gateway-process with -spawn-gateway")
		}
		return nil
	}
	switch {
	case b.addr != "" && b.spawn:
		return usagef("-gateway and -spawn-gateway exclude each other")
	case b.spawn && o.spawn == 0:
		return usagef("-spawn-gateway starts a gateway in front of -spawn's region; for a running region start krypton gateway and give -gateway")
	case b.pid != 0 && b.addr == "":
		return usagef("-gateway-pid names the process of a running gateway given with -gateway")
	case b.process && !b.spawn:
		return usagef("-gateway-process runs -spawn-gateway's gateway as a process of its own")
	case b.front != "tls" && b.front != "unix" && b.front != "framed":
		return usagef("-gateway-front must be tls, unix or framed")
	case b.front != "tls" && !b.spawn:
		return usagef("-gateway-front is for -spawn-gateway; give a running gateway's socket as -gateway unix:PATH or framed:PATH")
	case o.op != "datakey" && o.op != "unwrap" && o.op != "encrypt":
		return usagef("-op %s: through a gateway, bench measures datakey (GenerateDataKey), encrypt and unwrap", o.op)
	case o.op == "encrypt" && (b.front == "framed" || strings.HasPrefix(b.addr, "framed:")):
		return usagef("-op encrypt: the framed protocol serves GenerateDataKey and Unwrap only; use tls or unix")
	case b.payload < 0 || b.payload > 4<<20:
		return usagef("-gateway-payload must be 0 to 4 MiB")
	case o.cfg.Batch != 0:
		return usagef("-batch is for the region's batch RPCs; the gateway batches by itself (-gateway-batch)")
	case b.batch < 1 || b.batch > transport.MaxBatchItems:
		return usagef("-gateway-batch must be 1 (batching off) to %d", transport.MaxBatchItems)
	}
	return nil
}

// gatewayProbe reads what a bench run reports of the gateway: its process's CPU (nil when it
// runs in this process or is not known) and its batches (nil when not known).
type gatewayProbe struct {
	cpu     func() (time.Duration, bool)
	batches func() (bench.BatchCount, bool)
}

// start returns the bench target for the gateway: a running one at b.addr, or a new one in front
// of regionAddrs (with its stop function), and what can be read of it.
func (b *gatewayBench) start(ctx context.Context, cfg transport.ClientConfig, ca *pki.CA, regionAddrs []string, logw io.Writer) (kv1.WrapServiceClient, string, func(), gatewayProbe, error) {
	addr := b.addr
	stop := func() {}
	var probe gatewayProbe
	if b.pid != 0 {
		probe.cpu = procCPU(b.pid)
	}
	if b.spawn {
		if ca == nil {
			return nil, "", nil, probe, errors.New("bench: -spawn-gateway needs -spawn")
		}
		var err error
		if b.process {
			addr, stop, probe, err = b.startProcess(ctx, ca, regionAddrs)
		} else {
			addr, stop, probe, err = b.startInProcess(cfg, ca, regionAddrs)
		}
		if err != nil {
			return nil, "", nil, probe, err
		}
		where := "in this process"
		if b.process {
			where = "as a process of its own"
		}
		fmt.Fprintf(logw, "krypton: gateway %s on %s in front of %d nodes (batch %d, wait %s)\n", where, addr, len(regionAddrs), b.batch, b.batchWait)
	}
	var gw kv1.GatewayServiceClient
	var closeConn func()
	switch {
	case strings.HasPrefix(addr, "framed:"):
		fc, err := gateway.DialFramed(ctx, strings.TrimPrefix(addr, "framed:"))
		if err != nil {
			stop()
			return nil, "", nil, probe, err
		}
		gw, closeConn = framedGatewayClient{fc}, func() { fc.Close() }
	case strings.HasPrefix(addr, "unix:"):
		conn, err := grpc.NewClient("unix://"+strings.TrimPrefix(addr, "unix:"), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			stop()
			return nil, "", nil, probe, err
		}
		gw, closeConn = kv1.NewGatewayServiceClient(conn), func() { conn.Close() }
	default:
		gcfg := cfg
		gcfg.Server = pki.Identity{Kind: pki.KindGateway}
		if id, err := pki.LeafIdentity(cfg.Certificate); err == nil {
			gcfg.Server.Tenant = id.Tenant // the gateway of the caller's tenant
		}
		conn, err := transport.Dial(ctx, addr, gcfg)
		if err != nil {
			stop()
			return nil, "", nil, probe, err
		}
		gw, closeConn = kv1.NewGatewayServiceClient(conn), func() { conn.Close() }
	}
	client := gatewayWrapClient{gw: gw}
	if b.encrypt {
		client.payload = make([]byte, b.payload)
	}
	return client, addr, func() { closeConn(); stop() }, probe, nil
}

// startInProcess starts the gateway in this process and returns the address bench calls.
func (b *gatewayBench) startInProcess(cfg transport.ClientConfig, ca *pki.CA, regionAddrs []string) (string, func(), gatewayProbe, error) {
	srvCert, err := ca.IssueGateway(benchTenant, "gateway-bench", pki.NodeOptions{})
	if err != nil {
		return "", nil, gatewayProbe{}, err
	}
	gc := gateway.DefaultConfig()
	gc.RegionAddrs, gc.Region = regionAddrs, devRegionName // -spawn starts a development region
	gc.Roots, gc.Certificate, gc.ServerCertificate = cfg.Roots, cfg.Certificate, srvCert.TLSCertificate()
	gc.ListenAddr = "127.0.0.1:0"
	gc.BatchSize, gc.BatchWait = b.batch, b.batchWait
	var dir string
	if b.front != "tls" {
		if dir, err = os.MkdirTemp("", "krypton-bench-gateway-"); err != nil {
			return "", nil, gatewayProbe{}, err
		}
		gc.UnixSocket = filepath.Join(dir, "gateway.sock")
	}
	g, err := gateway.New(gc)
	if err != nil {
		os.RemoveAll(dir)
		return "", nil, gatewayProbe{}, err
	}
	served := make(chan error, 1)
	go func() { served <- g.Serve() }()
	stop := func() { g.Close(); <-served; os.RemoveAll(dir) }
	probe := gatewayProbe{batches: func() (bench.BatchCount, bool) {
		mfs, err := g.Registry().Gather()
		if err != nil {
			return bench.BatchCount{}, false
		}
		return batchCount(mfs)
	}}
	if b.front != "tls" {
		return b.front + ":" + gc.UnixSocket, stop, probe, nil
	}
	return g.Addr().String(), stop, probe, nil
}

// startProcess starts the gateway as `krypton gateway` (this binary) with certificates written to
// a temporary directory, waits for its socket or port, and returns the address bench calls and
// the reader of the process's CPU.
func (b *gatewayBench) startProcess(ctx context.Context, ca *pki.CA, regionAddrs []string) (string, func(), gatewayProbe, error) {
	dir, err := os.MkdirTemp("", "krypton-bench-gateway-")
	if err != nil {
		return "", nil, gatewayProbe{}, err
	}
	fail := func(err error) (string, func(), gatewayProbe, error) {
		os.RemoveAll(dir)
		return "", nil, gatewayProbe{}, err
	}
	svc, err := ca.IssueService(benchTenant, benchService, 24*time.Hour)
	if err != nil {
		return fail(err)
	}
	srv, err := ca.IssueGateway(benchTenant, "gateway-bench", pki.NodeOptions{})
	if err != nil {
		return fail(err)
	}
	p := func(name string) string { return filepath.Join(dir, name) }
	if err := os.WriteFile(p("ca.pem"), ca.CertPEM(), 0o600); err != nil {
		return fail(err)
	}
	if err := svc.WriteFiles(p("gateway.pem"), p("gateway-key.pem")); err != nil {
		return fail(err)
	}
	if err := srv.WriteFiles(p("server.pem"), p("server-key.pem")); err != nil {
		return fail(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0") // a free port for the TLS front end
	if err != nil {
		return fail(err)
	}
	port := ln.Addr().String()
	ln.Close()
	hln, err := net.Listen("tcp", "127.0.0.1:0") // and one for its metrics
	if err != nil {
		return fail(err)
	}
	httpAddr := hln.Addr().String()
	hln.Close()
	exe, err := os.Executable()
	if err != nil {
		return fail(err)
	}
	sock := p("gateway.sock")
	cmd := exec.Command(exe, "gateway", "-region", strings.Join(regionAddrs, ","), "-region-name", devRegionName,
		"-ca-cert", p("ca.pem"), "-cert", p("gateway.pem"), "-key", p("gateway-key.pem"),
		"-server-cert", p("server.pem"), "-server-key", p("server-key.pem"), "-listen", port,
		"-unix-socket", sock, "-batch-size", fmt.Sprint(b.batch), "-batch-wait", b.batchWait.String(),
		"-http-addr", httpAddr, "-log-level", "warn")
	cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
	if err := cmd.Start(); err != nil {
		return fail(err)
	}
	exited := make(chan struct{})
	go func() { cmd.Wait(); close(exited) }()
	stop := func() {
		cmd.Process.Signal(os.Interrupt)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		os.RemoveAll(dir)
	}
	// Ready when the socket accepts (it opens after the TCP listener, before the region is found:
	// bench's own readiness check waits for a first answer).
	deadline := time.Now().Add(30 * time.Second)
	for {
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
			break
		}
		select {
		case <-exited:
			os.RemoveAll(dir)
			return "", nil, gatewayProbe{}, errors.New("bench: the gateway process exited at start (its log is above)")
		case <-ctx.Done():
			stop()
			return "", nil, gatewayProbe{}, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			stop()
			return "", nil, gatewayProbe{}, errors.New("bench: the gateway process did not open its socket within 30s")
		}
	}
	addr := port
	if b.front != "tls" {
		addr = b.front + ":" + sock
	}
	return addr, stop, gatewayProbe{cpu: procCPU(cmd.Process.Pid), batches: scrapeBatches("http://" + httpAddr + "/metrics")}, nil
}

// scrapeBatches reads a gateway's batches from its /metrics at url.
func scrapeBatches(url string) func() (bench.BatchCount, bool) {
	client := &http.Client{Timeout: 2 * time.Second}
	return func() (bench.BatchCount, bool) {
		resp, err := client.Get(url)
		if err != nil {
			return bench.BatchCount{}, false
		}
		defer resp.Body.Close()
		parser := expfmt.NewTextParser(model.UTF8Validation)
		mfs, err := parser.TextToMetricFamilies(resp.Body)
		if err != nil {
			return bench.BatchCount{}, false
		}
		return batchCount(slices.Collect(maps.Values(mfs)))
	}
}

// batchCount sums krypton_gateway_batch_size over its operations (the batches and their
// requests) and reads krypton_gateway_delegated_data_keys_total. Either may not exist yet: no
// batch, no delegated key, or a gateway of an older version.
func batchCount(mfs []*dto.MetricFamily) (bench.BatchCount, bool) {
	var c bench.BatchCount
	for _, mf := range mfs {
		switch mf.GetName() {
		case "krypton_gateway_batch_size":
			for _, m := range mf.GetMetric() {
				c.Batches += float64(m.GetHistogram().GetSampleCount())
				c.Items += m.GetHistogram().GetSampleSum()
			}
		case "krypton_gateway_delegated_data_keys_total":
			for _, m := range mf.GetMetric() {
				c.Delegated += m.GetCounter().GetValue()
			}
		}
	}
	return c, true
}

// procCPU reads a process's user and system CPU time from /proc/PID/stat (Linux).
func procCPU(pid int) func() (time.Duration, bool) {
	return func() (time.Duration, bool) {
		b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
		if err != nil {
			return 0, false
		}
		// The command name (field 2) is in parentheses and may hold spaces: count from its end.
		i := bytes.LastIndexByte(b, ')')
		if i < 0 {
			return 0, false
		}
		f := strings.Fields(string(b[i+1:]))
		if len(f) < 13 {
			return 0, false
		}
		ut, err1 := strconv.ParseUint(f[11], 10, 64) // field 14, utime
		st, err2 := strconv.ParseUint(f[12], 10, 64) // field 15, stime
		if err1 != nil || err2 != nil {
			return 0, false
		}
		// In clock ticks, USER_HZ: 100 on every Linux architecture Go supports.
		return time.Duration(ut+st) * 10 * time.Millisecond, true
	}
}

// framedGatewayClient is the gateway's framed protocol (gateway.FramedClient) as the gRPC client
// interface bench drives: GenerateDataKey and Unwrap; Encrypt and Decrypt are not in it.
type framedGatewayClient struct{ fc *gateway.FramedClient }

func (c framedGatewayClient) GenerateDataKey(ctx context.Context, in *kv1.GenerateDataKeyRequest, _ ...grpc.CallOption) (*kv1.GenerateDataKeyResponse, error) {
	k := in.GetKey()
	pt, blob, used, err := c.fc.GenerateDataKey(ctx, wrap.KeyID{Tenant: k.GetTenant(), Service: k.GetService(), Version: k.GetVersion()}, in.GetContext())
	if err != nil {
		return nil, err
	}
	return &kv1.GenerateDataKeyResponse{Plaintext: pt, Blob: blob, Key: &kv1.KeyRef{Tenant: used.Tenant, Service: used.Service, Version: used.Version}}, nil
}

func (c framedGatewayClient) Unwrap(ctx context.Context, in *kv1.UnwrapRequest, _ ...grpc.CallOption) (*kv1.UnwrapResponse, error) {
	pt, used, err := c.fc.Unwrap(ctx, in.GetBlob(), in.GetContext())
	if err != nil {
		return nil, err
	}
	return &kv1.UnwrapResponse{Plaintext: pt, Key: &kv1.KeyRef{Tenant: used.Tenant, Service: used.Service, Version: used.Version}}, nil
}

func (framedGatewayClient) Encrypt(context.Context, *kv1.EncryptRequest, ...grpc.CallOption) (*kv1.EncryptResponse, error) {
	return nil, errNotThroughGateway
}

func (framedGatewayClient) Decrypt(context.Context, *kv1.DecryptRequest, ...grpc.CallOption) (*kv1.DecryptResponse, error) {
	return nil, errNotThroughGateway
}

// gatewayWrapClient lets bench's WrapService load generator drive a gateway: GenerateDataKey and
// Unwrap go to the gateway's methods of the same name (GenerateDataKey to Encrypt for -op
// encrypt). Wrap and BatchWrap, which bench uses only
// to check the target and to make blobs for unwrap, make data keys instead (the gateway wraps only
// keys it made). Everything else is Unimplemented, the packed RPCs included: bench refuses -batch
// with a gateway, which batches (packed) by itself.
type gatewayWrapClient struct {
	gw      kv1.GatewayServiceClient
	payload []byte // non-nil: GenerateDataKey is an Encrypt of payload
}

var errNotThroughGateway = status.Error(codes.Unimplemented, "bench: not measured through a gateway")

func (c gatewayWrapClient) GenerateDataKey(ctx context.Context, in *kv1.GenerateDataKeyRequest, opts ...grpc.CallOption) (*kv1.GenerateDataKeyResponse, error) {
	if c.payload != nil {
		if _, err := c.gw.Encrypt(ctx, &kv1.EncryptRequest{Key: in.GetKey(), Data: c.payload, Context: in.GetContext()}, opts...); err != nil {
			return nil, err
		}
		return &kv1.GenerateDataKeyResponse{}, nil
	}
	return c.gw.GenerateDataKey(ctx, in, opts...)
}

func (c gatewayWrapClient) Unwrap(ctx context.Context, in *kv1.UnwrapRequest, opts ...grpc.CallOption) (*kv1.UnwrapResponse, error) {
	return c.gw.Unwrap(ctx, in, opts...)
}

func (c gatewayWrapClient) Wrap(ctx context.Context, in *kv1.WrapRequest, opts ...grpc.CallOption) (*kv1.WrapResponse, error) {
	resp, err := c.gw.GenerateDataKey(ctx, &kv1.GenerateDataKeyRequest{Key: in.GetKey(), Context: in.GetContext()}, opts...)
	if err != nil {
		return nil, err
	}
	clear(resp.GetPlaintext())
	return &kv1.WrapResponse{Blob: resp.GetBlob(), Key: resp.GetKey()}, nil
}

func (c gatewayWrapClient) BatchWrap(ctx context.Context, in *kv1.BatchWrapRequest, opts ...grpc.CallOption) (*kv1.BatchWrapResponse, error) {
	out := &kv1.BatchWrapResponse{}
	for _, it := range in.GetItems() {
		resp, err := c.Wrap(ctx, it, opts...)
		if err != nil {
			return nil, err
		}
		out.Results = append(out.Results, &kv1.WrapResult{Result: &kv1.WrapResult_Value{Value: resp}})
	}
	return out, nil
}

func (gatewayWrapClient) Rewrap(context.Context, *kv1.RewrapRequest, ...grpc.CallOption) (*kv1.RewrapResponse, error) {
	return nil, errNotThroughGateway
}

func (gatewayWrapClient) BatchUnwrap(context.Context, *kv1.BatchUnwrapRequest, ...grpc.CallOption) (*kv1.BatchUnwrapResponse, error) {
	return nil, errNotThroughGateway
}

func (gatewayWrapClient) BatchGenerateDataKey(context.Context, *kv1.BatchGenerateDataKeyRequest, ...grpc.CallOption) (*kv1.BatchGenerateDataKeyResponse, error) {
	return nil, errNotThroughGateway
}

func (gatewayWrapClient) BatchRewrap(context.Context, *kv1.BatchRewrapRequest, ...grpc.CallOption) (*kv1.BatchRewrapResponse, error) {
	return nil, errNotThroughGateway
}

func (gatewayWrapClient) ListEndpoints(context.Context, *kv1.ListEndpointsRequest, ...grpc.CallOption) (*kv1.ListEndpointsResponse, error) {
	return nil, errNotThroughGateway
}

func (gatewayWrapClient) WatchKeyEvents(context.Context, ...grpc.CallOption) (grpc.BidiStreamingClient[kv1.WatchKeyEventsRequest, kv1.KeyEvent], error) {
	return nil, errNotThroughGateway
}

func (gatewayWrapClient) PackedWrap(context.Context, *kv1.PackedWrapRequest, ...grpc.CallOption) (*kv1.PackedWrapResponse, error) {
	return nil, errNotThroughGateway
}

func (gatewayWrapClient) PackedUnwrap(context.Context, *kv1.PackedUnwrapRequest, ...grpc.CallOption) (*kv1.PackedUnwrapResponse, error) {
	return nil, errNotThroughGateway
}

func (gatewayWrapClient) PackedGenerateDataKey(context.Context, *kv1.PackedGenerateDataKeyRequest, ...grpc.CallOption) (*kv1.PackedGenerateDataKeyResponse, error) {
	return nil, errNotThroughGateway
}

func (gatewayWrapClient) DelegateWrap(context.Context, *kv1.DelegateWrapRequest, ...grpc.CallOption) (*kv1.DelegateWrapResponse, error) {
	return nil, errNotThroughGateway
}
