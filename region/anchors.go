package region

import (
	"context"
	"errors"
	"log/slog"
	"sync"

	"github.com/kryptonkms/krypton/anchor"
	// The file:// development anchor; the cloud and HSM providers register themselves the same way.
	_ "github.com/kryptonkms/krypton/anchor/file"
)

// anchorCache keeps one open provider per anchor URI: providers hold clients, sessions and
// connection pools that are worth reusing across tenants and calls.
type anchorCache struct {
	log      *slog.Logger
	allowDev bool
	provider map[string]any // Config.AnchorOptions

	mu     sync.Mutex // guards open and closed
	open   map[string]anchor.Provider
	closed bool
}

func newAnchorCache(log *slog.Logger, allowDev bool, provider map[string]any) *anchorCache {
	return &anchorCache{log: log, allowDev: allowDev, provider: provider, open: make(map[string]anchor.Provider)}
}

// get returns the provider for uri, opening it on first use. A development anchor is refused
// unless the node allows them, and refused before it is opened: opening would read the key file
// and answer with its state ("destroyed", "unusable") instead of naming -dev-anchor. The file
// provider itself also refuses before it touches any file (anchor.Options.Development), and the
// Description check below stays as a third line.
func (c *anchorCache) get(ctx context.Context, uri string) (anchor.Provider, error) {
	if !c.allowDev && anchor.IsDevelopment(uri) {
		return nil, ErrDevAnchor
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return nil, ErrShutdown
	}
	if p := c.open[uri]; p != nil {
		return p, nil
	}
	p, err := anchor.Open(ctx, uri, anchor.Options{Logger: c.log, Provider: c.provider, Development: c.allowDev})
	if errors.Is(err, anchor.ErrDevelopment) {
		return nil, ErrDevAnchor
	}
	if err != nil {
		return nil, err
	}
	if p.Describe().Development && !c.allowDev { // a development scheme IsDevelopment does not know
		p.Close()
		return nil, ErrDevAnchor
	}
	c.open[uri] = p
	return p, nil
}

// check validates an anchor URI for a new tenant without keeping anything open beyond the cache.
func (c *anchorCache) check(ctx context.Context, uri string) error {
	_, err := c.get(ctx, uri)
	return err
}

func (c *anchorCache) close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for uri, p := range c.open {
		if err := p.Close(); err != nil {
			c.log.Warn("closing anchor", "anchor", anchor.Redact(uri), "err", err)
		}
		delete(c.open, uri)
	}
	c.closed = true
}

// Close implements io.Closer.
func (c *anchorCache) Close() error { c.close(); return nil }
