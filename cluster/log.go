package cluster

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/hashicorp/go-hclog"
)

// discardLogger is the logger of a Config without one.
func discardLogger() *slog.Logger { return slog.New(slog.DiscardHandler) }

// gateHandler drops records once closed is set. Raft's transport and
// memberlist do not wait for all their goroutines when shut down, and a
// straggler's last log line must not reach a logger whose owner is gone
// (in tests: t.Log after the test, which panics).
type gateHandler struct {
	h      slog.Handler
	closed *atomic.Bool
}

func (g gateHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return !g.closed.Load() && g.h.Enabled(ctx, l)
}

func (g gateHandler) Handle(ctx context.Context, r slog.Record) error {
	if g.closed.Load() {
		return nil
	}
	return g.h.Handle(ctx, r)
}

func (g gateHandler) WithAttrs(as []slog.Attr) slog.Handler {
	return gateHandler{h: g.h.WithAttrs(as), closed: g.closed}
}

func (g gateHandler) WithGroup(name string) slog.Handler {
	return gateHandler{h: g.h.WithGroup(name), closed: g.closed}
}

// newHCLogger bridges hashicorp/raft's hclog to slog: hclog writes JSON
// lines, and each line becomes one slog record with its fields as
// attributes. Going through JSON keeps the bridge to one small writer
// instead of a reimplementation of hclog.Logger's twenty methods.
func newHCLogger(l *slog.Logger, name string) hclog.Logger {
	level := hclog.Info
	switch {
	case l.Enabled(context.Background(), slog.LevelDebug):
		level = hclog.Debug
	case !l.Enabled(context.Background(), slog.LevelInfo):
		level = hclog.Warn
	}
	return hclog.New(&hclog.LoggerOptions{
		Name:       name,
		Level:      level,
		JSONFormat: true,
		Output:     &hclogWriter{l: l},
	})
}

type hclogWriter struct {
	l   *slog.Logger
	mu  sync.Mutex
	buf bytes.Buffer
}

func (w *hclogWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	for {
		line, err := w.buf.ReadBytes('\n')
		if err != nil {
			// Incomplete line: keep it for the next write.
			rest := append([]byte{}, line...)
			w.buf.Reset()
			w.buf.Write(rest)
			return len(p), nil
		}
		w.emit(line)
	}
}

func (w *hclogWriter) emit(line []byte) {
	var m map[string]any
	if err := json.Unmarshal(line, &m); err != nil {
		w.l.Info(strings.TrimSpace(string(line)))
		return
	}
	level := slog.LevelInfo
	switch m["@level"] {
	case "trace", "debug":
		level = slog.LevelDebug
	case "warn":
		level = slog.LevelWarn
	case "error":
		level = slog.LevelError
	}
	msg, _ := m["@message"].(string)
	keys := make([]string, 0, len(m))
	for k := range m {
		if !strings.HasPrefix(k, "@") {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	args := make([]any, 0, 2*len(keys)+2)
	if mod, ok := m["@module"].(string); ok {
		args = append(args, "module", mod)
	}
	for _, k := range keys {
		args = append(args, k, m[k])
	}
	w.l.Log(context.Background(), level, msg, args...)
}

// memberlistWriter bridges memberlist's log.Logger lines
// ("[DEBUG] memberlist: ...") to slog.
type memberlistWriter struct {
	l *slog.Logger
}

func (w memberlistWriter) Write(p []byte) (int, error) {
	for _, line := range strings.Split(strings.TrimRight(string(p), "\n"), "\n") {
		level := slog.LevelInfo
		for prefix, lv := range map[string]slog.Level{
			"[DEBUG]": slog.LevelDebug, "[TRACE]": slog.LevelDebug, "[INFO]": slog.LevelInfo,
			"[WARN]": slog.LevelWarn, "[ERR]": slog.LevelError, "[ERROR]": slog.LevelError,
		} {
			if i := strings.Index(line, prefix); i >= 0 {
				level = lv
				line = strings.TrimSpace(line[i+len(prefix):])
				break
			}
		}
		w.l.Log(context.Background(), level, line, "module", "memberlist")
	}
	return len(p), nil
}

var _ io.Writer = memberlistWriter{}
