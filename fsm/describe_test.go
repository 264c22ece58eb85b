package fsm

import "testing"

// TestDescribeServiceOfRevoked: a revoked service, or any service of a revoked tenant, describes
// with Current 0 and every version REVOKED (the admin API's Key contract), and a live service
// describes as stored.
func TestDescribeServiceOfRevoked(t *testing.T) {
	h := fixture(t)
	// A rotated service revoked as a whole: v1 DECRYPT_ONLY, v2 REVOKED on its own, v3 ACTIVE.
	h.must(CreateService{Tenant: "acme", Service: "rot", SealedL3: blob("acme", "rot", 1), SealedBy: 1})
	h.must(RotateServiceKey{Tenant: "acme", Service: "rot", Version: 2, SealedL3: blob("acme", "rot", 2), SealedBy: 1})
	own := h.must(RevokeKeyVersion{Tenant: "acme", Service: "rot", Version: 1})
	h.must(RotateServiceKey{Tenant: "acme", Service: "rot", Version: 3, SealedL3: blob("acme", "rot", 3), SealedBy: 1})
	whole := h.must(RevokeService{Tenant: "acme", Service: "rot"})
	for _, c := range []struct{ tenant, service string }{{"acme", "old"}, {"acme", "rot"}, {"gone", "pay"}} {
		svc, versions, err := h.s.DescribeService(c.tenant, c.service)
		if err != nil {
			t.Fatal(err)
		}
		if svc.Current != 0 || svc.Status != StatusRevoked || svc.RevokedAt == 0 {
			t.Errorf("%s/%s: current %d status %v revoked-at %d, want 0 REVOKED set", c.tenant, c.service, svc.Current, svc.Status, svc.RevokedAt)
		}
		for _, v := range versions {
			if v.Status != StatusRevoked || v.RevokedAt == 0 {
				t.Errorf("%s/%s v%d: %v revoked-at %d, want REVOKED", c.tenant, c.service, v.Version, v.Status, v.RevokedAt)
			}
		}
	}
	// A version revoked on its own keeps its own (earlier) time; the others take the service's.
	_, versions, _ := h.s.DescribeService("acme", "rot")
	if got, want := versions[0].RevokedAt, int64(own.Index)*1000; got != want {
		t.Errorf("v1 revoked-at %d, want its own %d", got, want)
	}
	if got, want := versions[2].RevokedAt, int64(whole.Index)*1000; got != want {
		t.Errorf("v3 revoked-at %d, want the service's %d", got, want)
	}
	// The stored state is unchanged, and a live service describes as stored.
	if stored, _ := h.s.Service("acme", "rot"); stored.Current != 3 {
		t.Errorf("stored current %d, want 3", stored.Current)
	}
	svc, versions, err := h.s.DescribeService("acme", "pay")
	if err != nil {
		t.Fatal(err)
	}
	want := []Status{StatusDecryptOnly, StatusRevoked, StatusActive}
	if svc.Current != 3 || len(versions) != 3 {
		t.Fatalf("acme/pay: current %d, %d versions", svc.Current, len(versions))
	}
	for i, v := range versions {
		if v.Status != want[i] {
			t.Errorf("acme/pay v%d: %v, want %v", v.Version, v.Status, want[i])
		}
	}
}
