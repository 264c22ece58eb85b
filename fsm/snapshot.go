package fsm

import (
	"bufio"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
)

// Snapshot format, version 1: JSON lines. The first line is the header; then
// one record per line: settings, cursor, each tenant (sorted by name, with
// its L2 versions) followed by each of its services (sorted by name), each
// followed by its key versions in order; then the revocation log and the
// dedupe table in order; and last an end record with the record count, so a
// truncated stream is refused. Writing and reading hold one record at a
// time, so a snapshot of any size costs bounded memory beyond the state.
// The order is fully determined by the state, which is what makes Hash a
// hash of the same records.

// SnapshotFormat names the snapshot format in its header.
const SnapshotFormat = "krypton-fsm-snapshot"

// SnapshotVersion is the snapshot format version written and accepted.
const SnapshotVersion = 1

type snapshotHeader struct {
	Format string `json:"format"`
	V      int    `json:"v"`
	Index  uint64 `json:"index"`
}

type record struct {
	Settings   *Settings    `json:"settings,omitempty"`
	Cursor     *uint64      `json:"cursor,omitempty"`
	Tenant     *Tenant      `json:"tenant,omitempty"`
	Service    *Service     `json:"service,omitempty"`
	KeyVersion *KeyVersion  `json:"key,omitempty"`
	Revocation *Revocation  `json:"revocation,omitempty"`
	Dedupe     *dedupeWire  `json:"dedupe,omitempty"`
	End        *snapshotEnd `json:"end,omitempty"`
}

func (r *record) count() int {
	n := 0
	for _, set := range []bool{r.Settings != nil, r.Cursor != nil, r.Tenant != nil, r.Service != nil,
		r.KeyVersion != nil, r.Revocation != nil, r.Dedupe != nil, r.End != nil} {
		if set {
			n++
		}
	}
	return n
}

type dedupeWire struct {
	ID     string      `json:"id"`
	Type   string      `json:"type"`
	Result *wireResult `json:"result"`
}

type snapshotEnd struct {
	Records uint64 `json:"records"`
}

// capture returns the current root and makes it immutable by starting a new
// write generation. It holds mu only for that.
func (s *State) capture() *root {
	s.mu.Lock()
	defer s.mu.Unlock()
	r := s.root
	s.gen++
	return r
}

// writeRecords writes every record of r (all but the header) to enc.
func writeRecords(enc *json.Encoder, r *root) error {
	var n uint64
	put := func(rec record) error {
		n++
		return enc.Encode(&rec)
	}
	settings, cursor := r.settings, r.cursor
	if err := put(record{Settings: &settings}); err != nil {
		return err
	}
	if err := put(record{Cursor: &cursor}); err != nil {
		return err
	}
	for _, tn := range sortedKeys(r.tenants) {
		t := r.tenants[tn]
		if err := put(record{Tenant: &t.t}); err != nil {
			return err
		}
		for _, sn := range sortedKeys(t.services) {
			sv := t.services[sn]
			if err := put(record{Service: &sv.s}); err != nil {
				return err
			}
			for i := range sv.versions {
				if err := put(record{KeyVersion: &sv.versions[i]}); err != nil {
					return err
				}
			}
		}
	}
	for i := range r.revlog {
		if err := put(record{Revocation: &r.revlog[i]}); err != nil {
			return err
		}
	}
	for _, id := range r.dedupe.order {
		d := r.dedupe.ids[id]
		wr, err := toWireResult(d.Result)
		if err != nil {
			return err
		}
		if err := put(record{Dedupe: &dedupeWire{ID: d.ID, Type: d.Type, Result: wr}}); err != nil {
			return err
		}
	}
	return enc.Encode(record{End: &snapshotEnd{Records: n}})
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// Hash returns a SHA-256 of the replicated state: equal on every node that
// applied the same log, whatever snapshots it took or restored. It does not
// cover AppliedIndex, so compare nodes at equal AppliedIndex. It costs a walk
// of the whole state, but holds the lock only to capture it.
func (s *State) Hash() [32]byte {
	r := s.capture()
	h := sha256.New()
	bw := bufio.NewWriterSize(h, 64<<10)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	if err := writeRecords(enc, r); err != nil {
		// Writing to a hash cannot fail; encoding the state cannot either
		// unless the state holds an error without a code, which Apply never
		// stores.
		panic("fsm: hash: " + err.Error())
	}
	bw.Flush()
	return [32]byte(h.Sum(nil))
}

// WriteSnapshot captures the state, stamped with AppliedIndex, and writes it
// to w. It may run concurrently with Apply.
func (s *State) WriteSnapshot(w io.Writer) error {
	return writeSnapshot(w, s.capture(), s.applied.Load())
}

func writeSnapshot(w io.Writer, r *root, index uint64) error {
	bw := bufio.NewWriterSize(w, 256<<10)
	enc := json.NewEncoder(bw)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(snapshotHeader{Format: SnapshotFormat, V: SnapshotVersion, Index: index}); err != nil {
		return fmt.Errorf("fsm: snapshot: %w", err)
	}
	if err := writeRecords(enc, r); err != nil {
		return fmt.Errorf("fsm: snapshot: %w", err)
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("fsm: snapshot: %w", err)
	}
	return nil
}

// Restore replaces the whole state with the snapshot read from rd, and sets
// AppliedIndex to the snapshot's index. On error the state is unchanged.
// Then OnChange is called once with a Restored change.
func (s *State) Restore(rd io.Reader) error {
	r, index, err := readSnapshot(rd)
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.gen++
	r.gen = s.gen
	s.root = r
	s.mu.Unlock()
	if s.onChange != nil {
		s.onChange(Change{Index: index, Kind: Restored})
	}
	s.applied.Store(index)
	return nil
}

var errSnapshot = errors.New("fsm: restore: malformed snapshot")

func readSnapshot(rd io.Reader) (*root, uint64, error) {
	// One strict decoder reads record after record: it buffers one record
	// at a time and refuses fields this version does not know.
	dec := json.NewDecoder(bufio.NewReaderSize(rd, 256<<10))
	dec.DisallowUnknownFields()
	fail := func(line uint64, what string) (*root, uint64, error) {
		return nil, 0, fmt.Errorf("%w: record %d: %s", errSnapshot, line, what)
	}
	var hdr snapshotHeader
	if err := dec.Decode(&hdr); err != nil || hdr.Format != SnapshotFormat {
		return fail(1, "not a krypton fsm snapshot")
	}
	if hdr.V != SnapshotVersion {
		return fail(1, fmt.Sprintf("unsupported version %d", hdr.V))
	}

	// The root is built with generation 0; Restore stamps it.
	r := newRoot(0)
	var (
		line, n uint64
		tenant  *tenantNode
		service *serviceNode
		ended   bool
	)
	// closeService checks the service just read has all its versions.
	closeService := func() bool {
		if service == nil {
			return true
		}
		ok := len(service.versions) > 0 && int(service.s.Current) == len(service.versions)
		service = nil
		return ok
	}
	line = 1
	for {
		var rec record
		err := dec.Decode(&rec)
		if err == io.EOF {
			break
		}
		line++
		if err != nil {
			return fail(line, "bad record: "+err.Error())
		}
		if ended {
			return fail(line, "data after end")
		}
		if rec.count() != 1 {
			return fail(line, "want exactly one kind of record per line")
		}
		switch {
		case rec.Settings != nil:
			if n != 0 || rec.Settings.Validate() != nil {
				return fail(line, "bad settings")
			}
			r.settings = *rec.Settings
		case rec.Cursor != nil:
			r.cursor = *rec.Cursor
		case rec.Tenant != nil:
			t := *rec.Tenant
			if !closeService() {
				return fail(line, "service without its versions")
			}
			if !validName(t.Name) || r.tenants[t.Name] != nil || t.CurrentL2 == 0 || int(t.CurrentL2) != len(t.L2) {
				return fail(line, "bad tenant")
			}
			if !oneOf(t.Status, StatusActive, StatusLocked, StatusRevoked) {
				return fail(line, "bad tenant status")
			}
			for i, l2 := range t.L2 {
				if l2.Version != uint32(i+1) || len(l2.Sealed) == 0 || !oneOf(l2.Status, StatusActive, StatusDecryptOnly) {
					return fail(line, "bad tenant key version")
				}
			}
			tenant = &tenantNode{t: t, services: map[string]*serviceNode{}}
			r.tenants[t.Name] = tenant
		case rec.Service != nil:
			sv := *rec.Service
			if !closeService() {
				return fail(line, "service without its versions")
			}
			if tenant == nil || sv.Tenant != tenant.t.Name || !validName(sv.Name) || tenant.services[sv.Name] != nil ||
				!oneOf(sv.Status, StatusActive, StatusRevoked) {
				return fail(line, "bad service")
			}
			service = &serviceNode{s: sv}
			tenant.services[sv.Name] = service
		case rec.KeyVersion != nil:
			kv := *rec.KeyVersion
			if service == nil || kv.Tenant != service.s.Tenant || kv.Service != service.s.Name ||
				int(kv.Version) != len(service.versions)+1 || len(kv.Sealed) == 0 ||
				!oneOf(kv.Status, StatusActive, StatusDecryptOnly, StatusRevoked) {
				return fail(line, "bad key version")
			}
			service.versions = append(service.versions, kv)
		case rec.Revocation != nil:
			if !closeService() {
				return fail(line, "service without its versions")
			}
			tenant = nil
			if rec.Revocation.Seq != uint64(len(r.revlog))+1 {
				return fail(line, "bad revocation sequence")
			}
			r.revlog = append(r.revlog, *rec.Revocation)
		case rec.Dedupe != nil:
			if !closeService() {
				return fail(line, "service without its versions")
			}
			tenant = nil
			d := rec.Dedupe
			if d.Result == nil || d.ID == "" {
				return fail(line, "bad dedupe entry")
			}
			if _, dup := r.dedupe.ids[d.ID]; dup {
				return fail(line, "duplicate dedupe entry")
			}
			res, err := fromWireResult(d.Result)
			if err != nil {
				return fail(line, "bad dedupe result")
			}
			r.dedupe.ids[d.ID] = dedupeEntry{ID: d.ID, Type: d.Type, Result: res}
			r.dedupe.order = append(r.dedupe.order, d.ID)
		case rec.End != nil:
			if !closeService() {
				return fail(line, "service without its versions")
			}
			if rec.End.Records != n {
				return fail(line, "record count mismatch")
			}
			ended = true
			continue
		default:
			return fail(line, "unknown record")
		}
		n++
	}
	if !ended {
		return fail(line, "truncated: no end record")
	}
	return r, hdr.Index, nil
}

func oneOf(s Status, allowed ...Status) bool {
	return slices.Contains(allowed, s)
}
