package fsm

import "fmt"

// Quota limits how much of a region one tenant, or one service of a tenant, may use, on every node
// on its own (each node enforces the whole quota for the calls it serves; see region/quota.go).
// The zero value is no quota: every field 0 means that dimension is unlimited.
type Quota struct {
	// Rate is the sustained rate in requests per second; an item of a batch or packed call is one
	// request. 0: no rate limit.
	Rate uint32 `json:"rate,omitempty"`
	// Burst is how many requests may come at once above the rate (the token bucket's size); 0
	// means Rate. A batch larger than the burst can never be admitted. Only with a Rate.
	Burst uint32 `json:"burst,omitempty"`
	// Concurrency bounds the calls in flight at once (a batch is one call). 0: unlimited.
	Concurrency uint32 `json:"concurrency,omitempty"`
}

// Bounds on a quota's fields: anything larger is a typo, not a limit.
const (
	MaxQuotaRate        = 10_000_000
	MaxQuotaBurst       = 10_000_000
	MaxQuotaConcurrency = 1_000_000
)

// IsZero reports whether q is no quota at all.
func (q Quota) IsZero() bool { return q == Quota{} }

// EffectiveBurst is the token bucket's size: Burst, or Rate when Burst is 0.
func (q Quota) EffectiveBurst() int {
	if q.Burst != 0 {
		return int(q.Burst)
	}
	return int(q.Rate)
}

// Validate refuses a quota out of bounds, naming the field and the valid range.
func (q Quota) Validate() error {
	switch {
	case q.Rate > MaxQuotaRate:
		return fmt.Errorf("quota rate %d is too large (at most %d requests/s; 0 means unlimited)", q.Rate, MaxQuotaRate)
	case q.Burst > MaxQuotaBurst:
		return fmt.Errorf("quota burst %d is too large (at most %d; 0 means the rate)", q.Burst, MaxQuotaBurst)
	case q.Burst != 0 && q.Rate == 0:
		return fmt.Errorf("quota burst %d without a rate: set a rate too, or leave the burst 0", q.Burst)
	case q.Concurrency > MaxQuotaConcurrency:
		return fmt.Errorf("quota concurrency %d is too large (at most %d calls in flight; 0 means unlimited)", q.Concurrency, MaxQuotaConcurrency)
	}
	return nil
}

func (q Quota) String() string {
	if q.IsZero() {
		return "unlimited"
	}
	return fmt.Sprintf("rate=%d/s burst=%d concurrency=%d", q.Rate, q.EffectiveBurst(), q.Concurrency)
}

// SetQuota sets the quota of a tenant (Service empty) or of one of its services, replacing the
// one it had; the zero Quota removes it.
type SetQuota struct {
	Tenant  string `json:"tenant"`
	Service string `json:"service,omitempty"`
	Quota   Quota  `json:"quota"`
}

func (SetQuota) Type() string { return "set-quota" }
func (SetQuota) command()     {}

func checkQuota(c SetQuota) error {
	if err := checkTenantName(c.Tenant); err != nil {
		return err
	}
	if c.Service != "" && !validName(c.Service) {
		return invalid(ErrInvalidName, "service")
	}
	if c.Quota.Validate() != nil {
		return invalid(ErrInvalidCommand, "quota")
	}
	return nil
}

func (a *applier) setQuota(c SetQuota) (Result, error) {
	if err := checkQuota(c); err != nil {
		return Result{}, err
	}
	t := a.s.root.tenants[c.Tenant]
	switch {
	case t == nil:
		return Result{}, refuse(ErrTenantNotFound, c.Tenant, "", 0)
	case t.t.Status == StatusRevoked:
		return Result{}, refuse(ErrRevoked, c.Tenant, "", 0)
	}
	if c.Service == "" {
		t = a.s.wTenant(c.Tenant)
		t.t.Quota = c.Quota
	} else {
		sv := t.services[c.Service]
		switch {
		case sv == nil:
			return Result{}, refuse(ErrServiceNotFound, c.Tenant, c.Service, 0)
		case sv.s.Status == StatusRevoked:
			return Result{}, refuse(ErrRevoked, c.Tenant, c.Service, 0)
		}
		_, sv = a.s.wService(c.Tenant, c.Service)
		sv.s.Quota = c.Quota
	}
	a.changed(QuotaSet, c.Tenant, c.Service, 0, "")
	return Result{Tenant: c.Tenant, Service: c.Service}, nil
}

// QuotaEntry is the quota of a tenant (Service empty) or of a service.
type QuotaEntry struct {
	Tenant, Service string
	Quota           Quota
}

// Quotas returns every quota set, tenants sorted by name, each before its services.
func (s *State) Quotas() []QuotaEntry {
	s.mu.RLock()
	defer s.mu.RUnlock()
	var out []QuotaEntry
	for _, tn := range sortedKeys(s.root.tenants) {
		t := s.root.tenants[tn]
		if !t.t.Quota.IsZero() {
			out = append(out, QuotaEntry{Tenant: tn, Quota: t.t.Quota})
		}
		for _, sn := range sortedKeys(t.services) {
			if q := t.services[sn].s.Quota; !q.IsZero() {
				out = append(out, QuotaEntry{Tenant: tn, Service: sn, Quota: q})
			}
		}
	}
	return out
}

// Snapshot records of quotas (recQuota, since version 5) follow the dedupe table, one per tenant or
// service with a quota, in Quotas order; a state without quotas writes none, so its Hash is as
// before.

// hasQuotas reports whether writeQuotas writes any record.
func hasQuotas(r *root) bool {
	for _, t := range r.tenants {
		if !t.t.Quota.IsZero() {
			return true
		}
		for _, s := range t.services {
			if !s.s.Quota.IsZero() {
				return true
			}
		}
	}
	return false
}

func writeQuotas(e *recWriter, r *root) {
	for _, tn := range sortedKeys(r.tenants) {
		t := r.tenants[tn]
		if !t.t.Quota.IsZero() {
			writeQuota(e, tn, "", t.t.Quota)
		}
		for _, sn := range sortedKeys(t.services) {
			if q := t.services[sn].s.Quota; !q.IsZero() {
				writeQuota(e, tn, sn, q)
			}
		}
	}
}

func writeQuota(e *recWriter, tenant, service string, q Quota) {
	e.begin()
	e.str(tenant)
	e.str(service)
	e.uvarint(uint64(q.Rate))
	e.uvarint(uint64(q.Burst))
	e.uvarint(uint64(q.Concurrency))
	e.end(recQuota)
}

func readQuota(d *recReader, r *root) bool {
	tn, sn := d.str(), d.str()
	q := Quota{Rate: d.u32(), Burst: d.u32(), Concurrency: d.u32()}
	if !d.ok() || q.IsZero() || q.Validate() != nil {
		return false
	}
	t := r.tenants[tn]
	if t == nil {
		return false
	}
	if sn == "" {
		if !t.t.Quota.IsZero() {
			return false
		}
		t.t.Quota = q
		return true
	}
	sv := t.services[sn]
	if sv == nil || !sv.s.Quota.IsZero() {
		return false
	}
	sv.s.Quota = q
	return true
}
