// Package kmsplugin is a Kubernetes KMS v2 plugin: it serves the kube-apiserver's
// KeyManagementService (k8s.io/kms/apis/v2: Status, Encrypt, Decrypt) on a Unix socket and does its
// work through Krypton (a gateway, or the region's nodes directly) as one service identity, so that
// a cluster's Secrets in etcd are sealed under the tenant's chain: the apiserver's DEK seed is
// sealed by package client (a data key the region wraps under the service key, L3) and bound to a
// fixed context naming the cluster.
//
// The key ID reported is the service key and version that wrapped the seed ("krypton:acme/k8s@v3"),
// read from the ciphertext's blob header (docs/format.md): when the service key rotates, Status
// reports the new version, and the apiserver makes a new DEK seed. Ciphertexts of older versions
// still decrypt for as long as the region keeps those versions (not revoked). Status does a round
// trip through the region (a small seal and open) on every call and reports "ok" only when both
// succeed; when the region refuses (a revoked key, a locked tenant, no reachable node) it reports
// the refusal's gRPC code and message instead of "ok", and no key ID, so that the apiserver stops
// extending the life of its current DEK seed (docs/kms-plugin.md).
//
//	c, err := client.DialGatewayUnix("/run/krypton/gateway.sock")
//	...
//	cfg := kmsplugin.DefaultConfig()
//	cfg.Keys, cfg.Socket = c, "/run/krypton/kms.sock"
//	p, err := kmsplugin.New(cfg)
//	...
//	go p.Serve()
//	defer p.Close()
package kmsplugin

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	kmsapi "k8s.io/kms/apis/v2"
	"k8s.io/kms/pkg/service"

	"github.com/kryptonkms/krypton/envelope"
	"github.com/kryptonkms/krypton/wrap"
)

// Version is the KMS API version the plugin reports in Status.
const Version = "v2"

// DefaultContext is the context bound to every DEK seed unless Config.Context says otherwise.
const DefaultContext = "kubernetes"

// KeyIDPrefix starts every key ID the plugin reports.
const KeyIDPrefix = "krypton:"

// statusPayload is what Status seals and opens again: not a secret.
var statusPayload = []byte("krypton kms-plugin status")

// Keys is what the plugin does its work through: package client's Client (through a gateway, or
// directly against a region) satisfies it.
type Keys interface {
	// Encrypt seals data under a fresh data key wrapped by the region, bound to context; the
	// result is an envelope ciphertext (package envelope).
	Encrypt(ctx context.Context, data, context []byte) ([]byte, error)
	// Decrypt opens a ciphertext made by Encrypt with the same context.
	Decrypt(ctx context.Context, ciphertext, context []byte) ([]byte, error)
}

// Config configures a Plugin.
type Config struct {
	// Keys does the work (required).
	Keys Keys
	// Socket is the path of the Unix socket to serve on (required). A stale socket left by an
	// earlier run is replaced; any other file there is an error.
	Socket string
	// SocketMode is the socket file's mode (0 means 0600: only the apiserver's user may call).
	SocketMode os.FileMode
	// SocketGroup, if not -1, is the numeric group given to the socket file.
	SocketGroup int
	// Context is bound to every DEK seed the plugin seals; the same context is needed to open it,
	// so it must stay the same for the cluster's life. Empty means DefaultContext.
	Context []byte
	// Timeout bounds one call's work (the apiserver's own deadline applies too). 0 means 10 s.
	Timeout time.Duration
	// Logger receives the plugin's log (never a key, seed or ciphertext); nil discards it.
	Logger *slog.Logger
}

// DefaultConfig is a Config with the defaults filled in (no socket group change).
func DefaultConfig() Config {
	return Config{SocketMode: 0o600, SocketGroup: -1, Context: []byte(DefaultContext), Timeout: 10 * time.Second}
}

// Validate checks the configuration; errors name the field to fix.
func (c *Config) Validate() error {
	switch {
	case c.Keys == nil:
		return errors.New("kmsplugin: Config.Keys is required (a client.Client through a gateway or region)")
	case c.Socket == "":
		return errors.New("kmsplugin: Config.Socket is required: the Unix socket the apiserver's EncryptionConfiguration names (endpoint: unix:///path)")
	case c.SocketMode&^0o777 != 0:
		return fmt.Errorf("kmsplugin: Config.SocketMode %o: want permission bits only, such as 0600", c.SocketMode)
	case c.Timeout < 0:
		return errors.New("kmsplugin: Config.Timeout must not be negative")
	case len(c.Context) > 4096:
		return errors.New("kmsplugin: Config.Context is over 4096 bytes")
	}
	return nil
}

// Plugin is a running KMS v2 plugin. It implements k8s.io/kms/pkg/service.Service; its gRPC
// front end is that package's GRPCService, on a listener the plugin makes (for the socket's mode
// and group).
type Plugin struct {
	cfg       Config
	statusCtx []byte
	log       *slog.Logger
	ln        net.Listener
	srv       *grpc.Server

	mu     sync.Mutex // guards closed
	closed bool
}

var _ service.Service = (*Plugin)(nil)

// New checks cfg and listens on the socket; Serve then serves until Close.
func New(cfg Config) (*Plugin, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if len(cfg.Context) == 0 {
		cfg.Context = []byte(DefaultContext)
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 10 * time.Second
	}
	if cfg.SocketMode == 0 {
		cfg.SocketMode = 0o600
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	ln, err := listenUnix(cfg)
	if err != nil {
		return nil, err
	}
	p := &Plugin{cfg: cfg, log: log, ln: ln,
		// Status seals under its own context, so that its probes are never confused with seeds.
		statusCtx: append(append([]byte{}, cfg.Context...), "\x00status"...)}
	p.srv = grpc.NewServer()
	// The library's GRPCService translates the protocol to the Service interface; only its
	// methods are used here (its ListenAndServe cannot set the socket's mode).
	kmsapi.RegisterKeyManagementServiceServer(p.srv, service.NewGRPCService(cfg.Socket, cfg.Timeout, p))
	return p, nil
}

// listenUnix listens on cfg.Socket with cfg's mode and group. (The same steps as the gateway's
// socket; net.Listen cannot take a mode, so it is set before anyone is told of the socket.)
func listenUnix(cfg Config) (net.Listener, error) {
	if fi, err := os.Lstat(cfg.Socket); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return nil, fmt.Errorf("kmsplugin: %s exists and is not a socket: remove it or choose another -socket", cfg.Socket)
		}
		os.Remove(cfg.Socket) // a stale socket of an earlier run
	}
	ln, err := net.Listen("unix", cfg.Socket)
	if err != nil {
		return nil, fmt.Errorf("kmsplugin: socket: %w", err)
	}
	if err := os.Chmod(cfg.Socket, cfg.SocketMode); err != nil {
		ln.Close()
		return nil, fmt.Errorf("kmsplugin: socket mode: %w", err)
	}
	if cfg.SocketGroup >= 0 {
		if err := os.Chown(cfg.Socket, -1, cfg.SocketGroup); err != nil {
			ln.Close()
			return nil, fmt.Errorf("kmsplugin: socket group: %w", err)
		}
	}
	return ln, nil
}

// Socket is the path the plugin serves on.
func (p *Plugin) Socket() string { return p.cfg.Socket }

// Serve serves the apiserver's calls until Close; it returns nil after Close.
func (p *Plugin) Serve() error {
	p.log.Info("kms plugin serving", "socket", p.cfg.Socket)
	err := p.srv.Serve(p.ln)
	p.mu.Lock()
	closed := p.closed
	p.mu.Unlock()
	if closed {
		return nil
	}
	return err
}

// Close stops serving: calls in flight finish (for up to the call timeout), then the socket is
// removed. The Keys are the caller's to close.
func (p *Plugin) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	p.mu.Unlock()
	stopped := make(chan struct{})
	go func() { p.srv.GracefulStop(); close(stopped) }()
	t := time.NewTimer(p.cfg.Timeout)
	defer t.Stop()
	select {
	case <-stopped:
	case <-t.C:
		p.srv.Stop()
		<-stopped
	}
	p.ln.Close() // Serve may not have been called
	return nil
}

// KeyID is the key ID the plugin reports for a ciphertext of package envelope: the service key
// and version that wrapped its data key, e.g. "krypton:acme/k8s@v3".
func KeyID(ciphertext []byte) (string, error) {
	c, err := envelope.Parse(ciphertext)
	if err != nil {
		return "", err
	}
	h, err := wrap.ParseHeader(c.Blob)
	if err != nil {
		return "", err
	}
	return KeyIDPrefix + h.Parent.String(), nil
}

// Encrypt seals the apiserver's DEK seed (service.Service).
func (p *Plugin) Encrypt(ctx context.Context, uid string, data []byte) (*service.EncryptResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	ct, err := p.cfg.Keys.Encrypt(ctx, data, p.cfg.Context)
	if err != nil {
		p.log.Warn("kms plugin: encrypt refused", "uid", uid, "code", status.Code(err).String(), "err", err)
		return nil, err
	}
	id, err := KeyID(ct)
	if err != nil {
		return nil, status.Errorf(codes.Internal, "kmsplugin: the ciphertext made does not parse: %v", err)
	}
	p.log.Debug("kms plugin: encrypted", "uid", uid, "key_id", id)
	return &service.EncryptResponse{Ciphertext: ct, KeyID: id}, nil
}

// Decrypt opens a DEK seed sealed by Encrypt, under whichever key version sealed it
// (service.Service). The key ID the apiserver sends is not needed: the ciphertext names its key.
func (p *Plugin) Decrypt(ctx context.Context, uid string, req *service.DecryptRequest) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	pt, err := p.cfg.Keys.Decrypt(ctx, req.Ciphertext, p.cfg.Context)
	if err != nil {
		p.log.Warn("kms plugin: decrypt refused", "uid", uid, "key_id", req.KeyID, "code", status.Code(err).String(), "err", err)
		return nil, err
	}
	return pt, nil
}

// Status reports whether the region serves the plugin's key now, and the key ID a new seed would
// be sealed under (service.Service). It seals and opens a probe through the region; on a refusal
// Healthz is the refusal (not "ok") and KeyID is empty.
func (p *Plugin) Status(ctx context.Context) (*service.StatusResponse, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.Timeout)
	defer cancel()
	id, err := p.probe(ctx)
	if err != nil {
		st := status.Convert(err)
		p.log.Warn("kms plugin: unhealthy", "code", st.Code().String(), "err", st.Message())
		return &service.StatusResponse{Version: Version, Healthz: "unhealthy: " + st.Code().String() + ": " + st.Message()}, nil
	}
	return &service.StatusResponse{Version: Version, Healthz: "ok", KeyID: id}, nil
}

// probe seals and opens statusPayload and returns the key ID it was sealed under.
func (p *Plugin) probe(ctx context.Context) (string, error) {
	ct, err := p.cfg.Keys.Encrypt(ctx, statusPayload, p.statusCtx)
	if err != nil {
		return "", err
	}
	id, err := KeyID(ct)
	if err != nil {
		return "", status.Errorf(codes.Internal, "kmsplugin: the ciphertext made does not parse: %v", err)
	}
	pt, err := p.cfg.Keys.Decrypt(ctx, ct, p.statusCtx)
	if err != nil {
		return "", err
	}
	if string(pt) != string(statusPayload) {
		return "", status.Error(codes.Internal, "kmsplugin: the status probe did not round-trip")
	}
	return id, nil
}
