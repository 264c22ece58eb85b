package quota

import (
	"testing"
	"time"

	"google.golang.org/genproto/googleapis/rpc/errdetails"
	"google.golang.org/grpc/codes"
)

// Admit is all or nothing across buckets: a refusal by the second bucket gives back the first's
// slot and tokens; slots come back on release; a batch larger than the burst is refused without a
// retry hint; a zero quota admits everything.
func TestAdmit(t *testing.T) {
	now := time.Now()
	tenant := NewBucket(Limits{Rate: 10, Burst: 10, Concurrency: 2})
	service := NewBucket(Limits{Concurrency: 1})
	rel, r := Admit(now, 4, tenant, service)
	if r != nil {
		t.Fatal(r)
	}
	if _, r := Admit(now, 1, tenant, service); r == nil || r.Kind != KindConcurrency || r.Index != 1 {
		t.Fatalf("second call in flight: %+v", r)
	}
	if tenant.InFlight() != 1 {
		t.Fatalf("the refused call kept the tenant's slot: %d in flight", tenant.InFlight())
	}
	rel()
	rel() // once only
	if tenant.InFlight() != 0 || service.InFlight() != 0 {
		t.Fatal("release did not give the slots back")
	}
	// 4 tokens spent, 6 left: 6 pass, the 7th waits about 100 ms.
	rel, r = Admit(now, 6, tenant, nil)
	if r != nil {
		t.Fatal(r)
	}
	rel()
	_, r = Admit(now, 1, tenant, nil)
	if r == nil || r.Kind != KindRate || r.RetryAfter <= 0 || r.RetryAfter > 100*time.Millisecond {
		t.Fatalf("over the rate: %+v", r)
	}
	st := Status(r, Describe(r, "tenant acme's"))
	if st.Code() != codes.ResourceExhausted || len(st.Details()) != 1 {
		t.Fatalf("status %v", st)
	}
	if ri, ok := st.Details()[0].(*errdetails.RetryInfo); !ok || ri.GetRetryDelay().AsDuration() != r.RetryAfter {
		t.Fatalf("detail %v", st.Details()[0])
	}
	_, r = Admit(now.Add(time.Second), 11, tenant)
	if r == nil || r.Kind != KindBatch || len(Status(r, "x").Details()) != 0 {
		t.Fatalf("batch over the burst: %+v", r)
	}
	if _, r := Admit(now, 1000, NewBucket(Limits{}), nil); r != nil {
		t.Fatal("a zero quota refused")
	}
	// Raising the rate starts a full bucket; changing only the concurrency keeps the tokens.
	tenant.Set(Limits{Rate: 20, Concurrency: 2})
	if _, r := Admit(now, 20, tenant); r != nil {
		t.Fatalf("after raising the rate: %+v", r)
	}
	tenant.Set(Limits{Rate: 20, Concurrency: 3})
	if _, r := Admit(now, 1, tenant); r == nil {
		t.Fatal("changing the concurrency refilled the tokens")
	}
}

// Exhausted says whether one request would be refused, and takes nothing.
func TestExhausted(t *testing.T) {
	now := time.Now()
	b := NewBucket(Limits{Rate: 10, Burst: 1})
	if _, _, ex := b.Exhausted(now); ex {
		t.Fatal("a full bucket is exhausted")
	}
	if _, _, ex := b.Exhausted(now); ex {
		t.Fatal("Exhausted took a token")
	}
	if _, r := Admit(now, 1, b); r != nil {
		t.Fatal(r)
	}
	kind, after, ex := b.Exhausted(now)
	if !ex || kind != KindRate || after <= 0 || after > 100*time.Millisecond {
		t.Fatalf("an empty bucket: %q %v %v; want rate, within 100ms", kind, after, ex)
	}
	if _, _, ex := b.Exhausted(now.Add(100 * time.Millisecond)); ex {
		t.Fatal("exhausted after a token's worth of time")
	}
	c := NewBucket(Limits{Concurrency: 1})
	release, r := Admit(now, 1, c)
	if r != nil {
		t.Fatal(r)
	}
	if kind, _, ex := c.Exhausted(now); !ex || kind != KindConcurrency {
		t.Fatalf("every slot taken: %q %v", kind, ex)
	}
	release()
	if _, _, ex := c.Exhausted(now); ex {
		t.Fatal("exhausted with a free slot")
	}
}
