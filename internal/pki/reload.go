package pki

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fsnotify/fsnotify"
)

// Material is what a TLS endpoint presents and trusts at one moment: its certificate and key, and
// the CA pool its peers' certificates must chain to.
type Material struct {
	Roots       *x509.CertPool
	Certificate tls.Certificate
}

// Source holds a process's current Material, replaced whole when its files are reloaded
// (Reloader). Configurations made by Server and Client read it at each handshake, so a new
// certificate or CA bundle is used by every handshake after the reload, and connections already
// open keep going on the one they were made with.
type Source struct {
	cur   atomic.Pointer[Material]
	stats *ReloadStats // shared by the sources of one Reloader; nil for a static source
}

// ReloadStats counts a Reloader's reloads; transport.NewRegistry exports them as
// krypton_tls_reloads_total{result="ok"|"refused"}.
type ReloadStats struct {
	OK, Refused atomic.Uint64
}

// StaticSource returns a Source that always holds roots and cert (tests, and libraries given a
// certificate instead of files).
func StaticSource(roots *x509.CertPool, cert tls.Certificate) *Source {
	s := &Source{}
	s.cur.Store(&Material{Roots: roots, Certificate: withLeaf(cert)})
	return s
}

// Current returns the material in use now.
func (s *Source) Current() Material { return *s.cur.Load() }

// Stats returns the reload counters of the Reloader that feeds s, or nil for a static source.
func (s *Source) Stats() *ReloadStats { return s.stats }

func withLeaf(c tls.Certificate) tls.Certificate {
	if c.Leaf == nil && len(c.Certificate) > 0 {
		c.Leaf, _ = x509.ParseCertificate(c.Certificate[0])
	}
	return c
}

// Server returns base set up to serve with s's current material: at every handshake,
// GetConfigForClient answers with a copy of base whose certificate is s's current one and whose
// ClientCAs (and RootCAs, where base had some) are s's current pool. base keeps its other settings
// (VerifyConnection, ClientAuth, ...), including those set on it after this call.
func (s *Source) Server(base *tls.Config) *tls.Config {
	hadRoots := base.RootCAs != nil
	base.GetConfigForClient = func(*tls.ClientHelloInfo) (*tls.Config, error) {
		m := s.cur.Load()
		c := base.Clone()
		c.GetConfigForClient = nil
		c.Certificates = []tls.Certificate{m.Certificate}
		c.ClientCAs = m.Roots
		if hadRoots {
			c.RootCAs = m.Roots
		}
		return c, nil
	}
	return base
}

// Client returns a copy of base for one new client connection: s's current certificate and pool
// as its Certificates and RootCAs (ClientCAs too, where base had some). crypto/tls reads RootCAs
// from the configuration a connection starts with and has no per-handshake hook for it on the
// client side, so a client takes a fresh copy per connection (transport.Dial's credentials and
// package cluster's dialer do).
func (s *Source) Client(base *tls.Config) *tls.Config {
	m := s.cur.Load()
	c := base.Clone()
	c.Certificates = []tls.Certificate{m.Certificate}
	c.RootCAs = m.Roots
	if base.ClientCAs != nil {
		c.ClientCAs = m.Roots
	}
	return c
}

// ReloadPair names the files of one certificate a Reloader keeps fresh and the Source they feed.
type ReloadPair struct {
	// Name is the certificate's role in logs and metrics ("node", "service", "server").
	Name              string
	CertFile, KeyFile string
}

// ReloaderConfig configures NewReloader.
type ReloaderConfig struct {
	// CAFile is the PEM bundle of CAs (LoadCertPool); Pairs the certificates, each with its key.
	CAFile string
	Pairs  []ReloadPair
	// ExpiryWarning: a certificate that expires within this window is logged as a warning when it
	// is loaded and every hour after; 0 means DefaultExpiryWarning.
	ExpiryWarning time.Duration
	// Logger receives reloads and refusals; nil discards.
	Logger *slog.Logger
}

// DefaultExpiryWarning is ReloaderConfig.ExpiryWarning's default: a week, the lead time of the
// KryptonCertificateExpiresSoon alert (deploy/prometheus/krypton-rules.yml).
const DefaultExpiryWarning = 7 * 24 * time.Hour

// Reloader keeps Sources in step with certificate files: it reloads them on Reload (the process's
// SIGHUP) and when the files change (Watch). A new set is used only whole and only if every file
// parses, every key matches its certificate, every certificate is valid now and names the same
// identity as the one loaded at start (a node's certificate cannot turn into another node's, a
// gateway's, or another region's: docs/identity.md), and the CA bundle verifies every
// certificate; otherwise the refusal is logged and counted and the previous set stays in use.
type Reloader struct {
	cfg     ReloaderConfig
	log     *slog.Logger
	stats   ReloadStats
	sources []*Source
	ids     []Identity // what each pair named at start
	mu      sync.Mutex // serializes reloads
	now     func() time.Time
}

// NewReloader loads the files once (an error names the file to fix) and returns the Reloader;
// Source(i) is the Source of cfg.Pairs[i].
func NewReloader(cfg ReloaderConfig) (*Reloader, error) {
	if cfg.ExpiryWarning <= 0 {
		cfg.ExpiryWarning = DefaultExpiryWarning
	}
	r := &Reloader{cfg: cfg, log: cfg.Logger, now: time.Now}
	if r.log == nil {
		r.log = slog.New(slog.DiscardHandler)
	}
	ms, ids, err := r.load(nil)
	if err != nil {
		return nil, err
	}
	r.ids = ids
	for _, m := range ms {
		s := &Source{stats: &r.stats}
		s.cur.Store(m)
		r.sources = append(r.sources, s)
	}
	r.warnExpiry()
	return r, nil
}

// Source returns the Source of the i-th pair of the configuration.
func (r *Reloader) Source(i int) *Source { return r.sources[i] }

// Stats returns the reload counters.
func (r *Reloader) Stats() *ReloadStats { return &r.stats }

// load reads and checks every file; want, if set, is the identity each pair must name.
func (r *Reloader) load(want []Identity) ([]*Material, []Identity, error) {
	roots, err := LoadCertPool(r.cfg.CAFile)
	if err != nil {
		return nil, nil, err
	}
	now := r.now()
	var ms []*Material
	var ids []Identity
	for i, p := range r.cfg.Pairs {
		c, err := LoadCertificate(p.CertFile, p.KeyFile)
		if err != nil {
			return nil, nil, err
		}
		leaf := c.Leaf()
		if now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
			return nil, nil, fmt.Errorf("pki: %s is not valid now (valid %s to %s): issue a new one", p.CertFile,
				leaf.NotBefore.UTC().Format(time.RFC3339), leaf.NotAfter.UTC().Format(time.RFC3339))
		}
		id, err := c.Identity()
		if err != nil {
			return nil, nil, fmt.Errorf("pki: %s: %w", p.CertFile, err)
		}
		if want != nil && id != want[i] {
			return nil, nil, fmt.Errorf("pki: %s names %s, but this process runs as %s: issue the new certificate for the same identity", p.CertFile, id, want[i])
		}
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, CurrentTime: now, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
			return nil, nil, fmt.Errorf("pki: %s does not chain to the CA bundle %s: %w", p.CertFile, r.cfg.CAFile, err)
		}
		ms = append(ms, &Material{Roots: roots, Certificate: c.TLSCertificate()})
		ids = append(ids, id)
	}
	return ms, ids, nil
}

// Reload reads the files again and, if the whole set is good, puts it in use; otherwise it keeps
// the previous set, logs why and returns the error. Unchanged files reload as a no-op.
func (r *Reloader) Reload() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	ms, _, err := r.load(r.ids)
	if err != nil {
		r.stats.Refused.Add(1)
		r.log.Error("certificate reload refused; the previous certificates stay in use", "err", err)
		return err
	}
	for i, m := range ms {
		old := r.sources[i].cur.Load()
		r.sources[i].cur.Store(m)
		if old.Certificate.Leaf.SerialNumber.Cmp(m.Certificate.Leaf.SerialNumber) != 0 {
			r.log.Info("certificate reloaded", "certificate", r.cfg.Pairs[i].Name,
				"serial", m.Certificate.Leaf.SerialNumber.Text(16), "not-after", m.Certificate.Leaf.NotAfter.UTC().Format(time.RFC3339))
		}
	}
	r.stats.OK.Add(1)
	r.warnExpiry()
	return nil
}

// warnExpiry logs a warning for each certificate that expires within the warning window.
func (r *Reloader) warnExpiry() {
	now := r.now()
	for i, s := range r.sources {
		leaf := s.cur.Load().Certificate.Leaf
		if left := leaf.NotAfter.Sub(now); left < r.cfg.ExpiryWarning {
			r.log.Warn("certificate expires soon: issue a new one and replace the files (they are reloaded without a restart)",
				"certificate", r.cfg.Pairs[i].Name, "file", r.cfg.Pairs[i].CertFile,
				"not-after", leaf.NotAfter.UTC().Format(time.RFC3339), "left", left.Round(time.Minute).String())
		}
	}
}

// Watch reloads whenever a file in the directories of the configured files changes, until ctx
// ends, and warns of expiry every hour. It watches directories, not files: cert-manager and the
// kubelet replace a Secret's files by swapping a ..data symlink, and editors and writeAtomic by
// renaming a new file over the old, which a watch on the old file would not follow. Events come
// in bursts (a key and its certificate), so a reload waits until they have been quiet for
// settle (0: 200 ms).
func (r *Reloader) Watch(ctx context.Context, settle time.Duration) error {
	if settle <= 0 {
		settle = 200 * time.Millisecond
	}
	w, err := fsnotify.NewWatcher()
	if err != nil {
		return fmt.Errorf("pki: watch certificate files: %w", err)
	}
	defer w.Close()
	dirs := map[string]bool{}
	for _, f := range r.files() {
		d := filepath.Dir(f)
		if dirs[d] {
			continue
		}
		if err := w.Add(d); err != nil {
			return fmt.Errorf("pki: watch %s: %w", d, err)
		}
		dirs[d] = true
	}
	hourly := time.NewTicker(time.Hour)
	defer hourly.Stop()
	var fire <-chan time.Time
	var t *time.Timer
	for {
		select {
		case <-ctx.Done():
			if t != nil {
				t.Stop()
			}
			return nil
		case ev, ok := <-w.Events:
			if !ok {
				return errors.New("pki: certificate watch closed")
			}
			if ev.Op == fsnotify.Chmod {
				continue
			}
			if t == nil {
				t = time.NewTimer(settle)
			} else {
				t.Reset(settle)
			}
			fire = t.C
		case err, ok := <-w.Errors:
			if !ok {
				return errors.New("pki: certificate watch closed")
			}
			r.log.Warn("certificate watch error", "err", err)
		case <-fire:
			fire = nil
			_ = r.Reload() // logged and counted there
		case <-hourly.C:
			r.warnExpiry()
		}
	}
}

func (r *Reloader) files() []string {
	fs := []string{r.cfg.CAFile}
	for _, p := range r.cfg.Pairs {
		fs = append(fs, p.CertFile, p.KeyFile)
	}
	return fs
}
