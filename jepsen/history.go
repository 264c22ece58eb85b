package jepsen

import (
	"bufio"
	"encoding/json"
	"os"
	"sync"
	"time"
)

// Operation types of the workload.
const (
	OpCreate = "create" // CreateKey of a new service
	OpRotate = "rotate" // RotateKey
	OpRevoke = "revoke" // RevokeKey of one version (Version > 0) or the whole service (0)
	OpWrap   = "wrap"   // Wrap of a fresh random data key
	OpUnwrap = "unwrap" // Unwrap of a blob an earlier wrap returned
)

// Outcomes, as Jepsen names them: ok and fail are definite; info is indeterminate (a timeout or a
// lost connection: a write may or may not have taken effect).
const (
	OK   = "ok"
	Fail = "fail"
	Info = "info"
)

// Op is one operation of the history: one request of one client, from invocation to completion.
// It holds no key material: plaintexts and blobs stay in the harness's memory (opData).
type Op struct {
	ID      int    `json:"id"`
	Process int    `json:"process"` // client number; probes are probeProcess + node index
	Type    string `json:"type"`
	Key     string `json:"key"`  // tenant/service
	Node    string `json:"node"` // node asked
	// Arg is the version a revoke names (0: the whole service) or, for an unwrap, the version of
	// the blob (known from its wrap); Version is the version a wrap, unwrap or rotate reported.
	Arg       uint32 `json:"arg,omitempty"`
	Version   uint32 `json:"version,omitempty"`
	WrapOf    int    `json:"wrap-of,omitempty"` // an unwrap's wrap op id
	RequestID string `json:"request-id,omitempty"`
	Invoke    int64  `json:"invoke-ns"`   // since the start of the run
	Complete  int64  `json:"complete-ns"` // since the start of the run
	Outcome   string `json:"outcome"`
	Code      string `json:"code,omitempty"` // gRPC code of a failure
	Error     string `json:"error,omitempty"`
	// Fence is how a revoke was made effective: confirmed and lease-expired nodes.
	Fence string `json:"fence,omitempty"`
}

// probeProcess numbers the post-revocation probes: probeProcess + node index.
const probeProcess = 1000

// opData is what the harness keeps of a wrap in memory only.
type opData struct {
	plaintext []byte
	blob      []byte
	context   []byte
	version   uint32
}

// history records operations as they complete (and a JSON-lines file of them).
type history struct {
	start time.Time
	mu    sync.Mutex
	ops   []Op
	data  map[int]*opData
	next  int
	count map[string]int // by outcome, for the progress line
	w     *bufio.Writer
	f     *os.File
}

func newHistory(path string, start time.Time) (*history, error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	return &history{start: start, data: map[int]*opData{}, count: map[string]int{}, f: f, w: bufio.NewWriter(f)}, nil
}

func (h *history) now() int64 { return int64(time.Since(h.start)) }

// begin allocates an op id and stamps the invocation.
func (h *history) begin(op *Op) {
	h.mu.Lock()
	h.next++
	op.ID = h.next
	h.mu.Unlock()
	op.Invoke = h.now()
}

// end stamps the completion and records op.
func (h *history) end(op *Op, data *opData) {
	op.Complete = h.now()
	h.mu.Lock()
	defer h.mu.Unlock()
	h.ops = append(h.ops, *op)
	h.count[op.Outcome]++
	if data != nil {
		h.data[op.ID] = data
	}
	b, _ := json.Marshal(op)
	h.w.Write(b)
	h.w.WriteByte('\n')
}

// counts returns how many operations completed ok, failed and were indeterminate.
func (h *history) counts() (ok, fail, info int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.count[OK], h.count[Fail], h.count[Info]
}

func (h *history) snapshot() []Op {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]Op(nil), h.ops...)
}

func (h *history) get(id int) *opData {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.data[id]
}

func (h *history) close() error {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.f == nil {
		return nil
	}
	h.w.Flush()
	err := h.f.Close()
	h.f = nil
	return err
}
