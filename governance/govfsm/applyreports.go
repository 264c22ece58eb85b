// Regions and their reports: who may report for a region and what a report records.

package govfsm

import (
	"slices"
	"strconv"
	"strings"

	"github.com/kryptonkms/krypton/wrap"
)

type region struct {
	Cursor     uint64   `json:"cursor"`
	ReportedAt int64    `json:"reported"`
	Inventory  []KeyRef `json:"inventory,omitempty"`
	// The region's Raft configuration as governance last learned it from an accepted report (the
	// highest index): once it is known, only its voters may report (DESIGN.md, "Who may report").
	ConfigIndex uint64   `json:"cfg-index,omitempty"`
	Voters      []string `json:"voters,omitempty"`
}

// admits reports whether node may report for region r: any node until a configuration is known
// (trust on first use, but a node reporting a configuration must be among its voters), then its
// voters only. r may be nil (never reported).
func (r *region) admits(c *Command) bool {
	if r != nil && r.ConfigIndex > 0 {
		return slices.Contains(r.Voters, c.Node)
	}
	return c.ConfigIndex == 0 || slices.Contains(c.Voters, c.Node)
}

// changes reports whether applying report c to r would change anything but the report time.
func (r *region) changes(c *Command) bool {
	if r == nil {
		return true
	}
	// A configuration index is a position in the region's log: a newer one with the same voters
	// changes nothing worth a write.
	if c.Cursor > r.Cursor || (c.ConfigIndex > r.ConfigIndex && !slices.Equal(c.Voters, r.Voters)) {
		return true
	}
	return c.HasInventory && !slices.Equal(normInventory(c.Inventory), r.Inventory)
}

// normInventory returns inv sorted and without duplicates, as the state keeps it.
func normInventory(inv []KeyRef) []KeyRef {
	out := slices.Clone(inv)
	slices.SortFunc(out, compareKeyRef)
	return slices.Compact(out)
}

func (s *state) report(c *Command, now int64) *Result {
	if wrap.ValidateName(c.Region) != nil || len(c.Inventory) > MaxInventory {
		return &Result{Err: ErrInvalidCommand}
	}
	if !ValidReportConfig(c.ConfigIndex, c.CommitIndex, c.Voters) {
		return &Result{Err: ErrInvalidCommand}
	}
	r := s.Regions[c.Region]
	// Checked here too, not only where the report arrived: the configuration that removed the node
	// may have been learned between that check and this entry.
	if !r.admits(c) {
		return &Result{Err: ErrNotRegionVoter}
	}
	if c.Cursor > s.Head {
		return &Result{Err: ErrCursorAhead}
	}
	if r == nil {
		r = &region{}
		s.Regions[c.Region] = r
	}
	if c.Cursor > r.Cursor {
		r.Cursor = c.Cursor // reports that go backwards are ignored
	}
	r.ReportedAt = now
	if c.HasInventory {
		r.Inventory = normInventory(c.Inventory)
	}
	if c.ConfigIndex > r.ConfigIndex {
		r.ConfigIndex, r.Voters = c.ConfigIndex, slices.Clone(c.Voters)
	}
	return &Result{Recorded: r.Cursor}
}

// resetVoters forgets region c.Region's configuration (OpResetVoters): any node certificate of the
// region may report again, and the next report that carries a configuration sets it (trust on first
// use). The cursor, report time and inventory stay.
func (s *state) resetVoters(c *Command) *Result {
	if wrap.ValidateName(c.Region) != nil || c.Reason == "" {
		return &Result{Err: ErrInvalidCommand}
	}
	// What is forgotten, for the audit records: "<configuration index> <voters, comma-separated>".
	prev := "0 "
	if r := s.Regions[c.Region]; r != nil {
		prev = strconv.FormatUint(r.ConfigIndex, 10) + " " + strings.Join(r.Voters, ",")
		r.ConfigIndex, r.Voters = 0, nil
	}
	return &Result{Previous: prev}
}

func compareKeyRef(a, b KeyRef) int {
	switch {
	case a.Tenant != b.Tenant:
		return cmpString(a.Tenant, b.Tenant)
	case a.Service != b.Service:
		return cmpString(a.Service, b.Service)
	case a.Version < b.Version:
		return -1
	case a.Version > b.Version:
		return 1
	}
	return 0
}

func cmpString(a, b string) int {
	if a < b {
		return -1
	}
	return 1
}
