package govfsm_test

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/kryptonkms/krypton/governance/govfsm"
	"github.com/kryptonkms/krypton/internal/owner"
	"github.com/kryptonkms/krypton/internal/owner/ownertest"
)

// TestSharedTenantRules: a shared tenant's region set and the sealed keys its home publishes — who
// may publish, what makes an event and to whom it goes, and what the set may not lose.
func TestSharedTenantRules(t *testing.T) {
	f := govfsm.NewFSM()
	withHome := func(h string) func(*govfsm.Command) { return func(c *govfsm.Command) { c.Home = h } }
	mustErr(t, apply(t, f, cmd(govfsm.OpCreateTenant, "c-bad", "acme", withAnchor(devAnchor), withRegions("eu", "us"), withHome("ap"))), govfsm.ErrInvalidCommand)
	mustOK(t, apply(t, f, cmd(govfsm.OpCreateTenant, "c0", "acme", withAnchor(devAnchor), withRegions("eu", "us"), withHome("eu"))))
	mustOK(t, apply(t, f, cmd(govfsm.OpCreateTenant, "c1", "solo", withAnchor(devAnchor), withRegions("eu", "us"))))
	mustOK(t, apply(t, f, cmd(govfsm.OpCreateService, "s0", "acme", withService("pay", 0))))

	publish := func(rid, tenant, region string, keys *govfsm.TenantKeys) *govfsm.Result {
		return apply(t, f, cmd(govfsm.OpPublishKeys, rid, tenant, func(c *govfsm.Command) { c.Region, c.Keys = region, keys }))
	}
	keys := &govfsm.TenantKeys{
		L2: []govfsm.SealedL2{{Region: "us", Version: 1, Sealed: []byte("l2-us-1")}},
		L3: []govfsm.SealedL3{{Service: "pay", Version: 1, SealedBy: 1, Sealed: []byte("l3-pay-1")}},
	}
	mustErr(t, publish("p-us", "acme", "us", keys), govfsm.ErrNotHome)
	mustErr(t, publish("p-solo", "solo", "eu", keys), govfsm.ErrNotShared)
	mustErr(t, publish("p-out", "acme", "eu", &govfsm.TenantKeys{L2: []govfsm.SealedL2{{Region: "ap", Version: 1, Sealed: []byte("x")}}}), govfsm.ErrInvalidCommand)
	e := mustOK(t, publish("p1", "acme", "eu", keys)).Event
	if e == nil || e.Kind != govfsm.KindTenantKeys || e.Home != "eu" || !slices.Equal(e.Regions, []string{"us"}) || len(e.Keys.L2) != 1 || len(e.Keys.L3) != 1 {
		t.Fatalf("TENANT_KEYS event: %+v", e)
	}
	// The same keys again: nothing new, no event.
	head := f.Head()
	if r := mustOK(t, publish("p2", "acme", "eu", keys)); r.Event != nil || f.Head() != head {
		t.Fatalf("a publish of nothing new made event %+v", r.Event)
	}
	// A revoked version is listed in the next TENANT_KEYS event.
	mustOK(t, apply(t, f, cmd(govfsm.OpRevoke, "rv", "acme", withService("pay", 1))))
	keys.L3 = append(keys.L3, govfsm.SealedL3{Service: "pay", Version: 2, SealedBy: 1, Sealed: []byte("l3-pay-2")})
	e = mustOK(t, publish("p3", "acme", "eu", keys)).Event
	if !slices.Contains(e.Revoked, govfsm.KeyRef{Tenant: "acme", Service: "pay", Version: 1}) || len(e.Keys.L3) != 2 {
		t.Fatalf("TENANT_KEYS after a revocation: %+v", e)
	}

	setRegions := func(rid, tenant string, regions ...string) *govfsm.Result {
		return apply(t, f, cmd(govfsm.OpSetRegions, rid, tenant, withRegions(regions...)))
	}
	mustErr(t, setRegions("r-solo", "solo", "eu"), govfsm.ErrNotShared)
	mustErr(t, setRegions("r-home", "acme", "us"), govfsm.ErrInvalidCommand) // the home must stay
	add := mustOK(t, setRegions("r1", "acme", "ap", "eu", "us")).Event
	if add.Kind != govfsm.KindSetRegions || !slices.Equal(add.Regions, []string{"ap", "eu", "us"}) || len(add.Removed) != 0 {
		t.Fatalf("SET_REGIONS adding ap: %+v", add)
	}
	rm := mustOK(t, setRegions("r2", "acme", "ap", "eu")).Event
	if !slices.Equal(rm.Removed, []string{"us"}) {
		t.Fatalf("SET_REGIONS removing us: %+v", rm)
	}
	// us learns of its removal, and of nothing of the tenant after it.
	usEvents, _ := f.EventsFor("us", rm.Cursor-1, 100)
	if len(usEvents) != 1 || usEvents[0].Cursor != rm.Cursor {
		t.Fatalf("us after its removal sees %+v", usEvents)
	}
	mustOK(t, apply(t, f, cmd(govfsm.OpLockTenant, "l1", "acme")))
	if ev, _ := f.EventsFor("us", rm.Cursor, 100); len(ev) != 0 {
		t.Fatalf("us, removed, still gets %+v", ev)
	}
	// Governance dropped the L2 blobs it held for us.
	for _, b := range f.TenantKeysFor("acme").L2 {
		if b.Region == "us" {
			t.Fatal("governance still holds an L2 sealed for a removed region")
		}
	}
}

// TestPerRegionAnchors: a tenant's L1 may be one key per region. Governance keeps each region's
// pointer, the kill switch empties every one of them (keeping which regions have their own), a
// pointer is set per region, a publish sealed under an anchor its region no longer has is refused,
// and governance drops the L2 blobs of a region whose anchor moved.
func TestPerRegionAnchors(t *testing.T) {
	f := govfsm.NewFSM()
	const euA, usA, usB = "file:///keys/eu.key", "file:///keys/us.key", "file:///keys/us-2.key"
	shared := func(ra map[string]string) func(*govfsm.Command) {
		return func(c *govfsm.Command) { c.Home, c.RegionAnchors = "eu", ra }
	}
	mustErr(t, apply(t, f, cmd(govfsm.OpCreateTenant, "c-bad", "acme", withAnchor(euA), withRegions("eu", "us"), shared(map[string]string{"ap": usA}))), govfsm.ErrInvalidCommand)
	mustErr(t, apply(t, f, cmd(govfsm.OpCreateTenant, "c-empty", "acme", withAnchor(euA), withRegions("eu", "us"), shared(map[string]string{"us": ""}))), govfsm.ErrInvalidCommand)
	e := mustOK(t, apply(t, f, cmd(govfsm.OpCreateTenant, "c0", "acme", withAnchor(euA), withRegions("eu", "us"), shared(map[string]string{"us": usA})))).Event
	if e.AnchorURI != euA || e.RegionAnchors["us"] != usA {
		t.Fatalf("CREATE_TENANT: %+v", e)
	}
	_, anchors, _, _, err := f.TenantAnchors("acme")
	if err != nil || anchors["eu"] != euA || anchors["us"] != usA {
		t.Fatalf("TenantAnchors: %v %v", anchors, err)
	}

	publish := func(rid, anchor string) *govfsm.Result {
		keys := &govfsm.TenantKeys{L2: []govfsm.SealedL2{{Region: "us", Version: 1, Sealed: []byte("l2-us-1-" + rid), Anchor: anchor}}}
		return apply(t, f, cmd(govfsm.OpPublishKeys, rid, "acme", func(c *govfsm.Command) { c.Region, c.Keys = "eu", keys }))
	}
	mustErr(t, publish("p-stale", euA), govfsm.ErrStaleAnchor)
	mustOK(t, publish("p1", usA))
	if k := f.TenantKeysFor("acme"); len(k.L2) != 1 || k.L2[0].Anchor != "" {
		t.Fatalf("held L2: %+v", k.L2)
	}

	// us's pointer moves: its L2 blob goes, and a publish under the old pointer is refused.
	setAnchor := func(rid, region, uri string) *govfsm.Result {
		return apply(t, f, cmd(govfsm.OpSetAnchor, rid, "acme", withAnchor(uri), func(c *govfsm.Command) { c.Region = region }))
	}
	mustErr(t, setAnchor("s-out", "ap", usB), govfsm.ErrNotTenantRegion)
	e = mustOK(t, setAnchor("s1", "us", usB)).Event
	if e.AnchorURI != euA || e.RegionAnchors["us"] != usB || !slices.Equal(e.Regions, []string{"us"}) {
		t.Fatalf("SET_ANCHOR for us: %+v", e)
	}
	if k := f.TenantKeysFor("acme"); len(k.L2) != 0 {
		t.Fatalf("governance still holds us's L2 sealed under its old anchor: %+v", k.L2)
	}
	mustErr(t, publish("p-old", usA), govfsm.ErrStaleAnchor)
	mustOK(t, publish("p2", usB))

	// The kill switch empties every pointer; us keeps its own (empty), so the tenant's anchor
	// set again does not reach it.
	mustOK(t, apply(t, f, cmd(govfsm.OpDeleteAnchor, "d1", "acme", func(c *govfsm.Command) { c.Reason = "kill" })))
	tn, err := f.Tenant("acme")
	if err != nil || tn.AnchorURI != "" || tn.RegionAnchors["us"] != "" || len(tn.RegionAnchors) != 1 {
		t.Fatalf("after the kill switch: %+v %v", tn, err)
	}
	if _, _, _, _, err := f.TenantAnchors("acme"); err != govfsm.ErrNoAnchor {
		t.Fatalf("TenantAnchors after the kill switch: %v", err)
	}
	e = mustOK(t, setAnchor("s2", "", euA)).Event
	if e.AnchorURI != euA || e.RegionAnchors["us"] != "" {
		t.Fatalf("SET_ANCHOR after the kill switch: %+v", e)
	}
	_, anchors, _, _, _ = f.TenantAnchors("acme")
	if _, ok := anchors["us"]; ok || anchors["eu"] != euA {
		t.Fatalf("TenantAnchors with us still off: %v", anchors)
	}
	mustOK(t, setAnchor("s3", "us", usB))
	_, anchors, _, _, _ = f.TenantAnchors("acme")
	if anchors["us"] != usB {
		t.Fatalf("TenantAnchors after us is back: %v", anchors)
	}
}

// TestMakeShared: a tenant created without a home is made shared with its regions as they are;
// each other region reports its own newest versions once, and TenantAnchors returns the highest
// and the regions still to report.
func TestMakeShared(t *testing.T) {
	f := govfsm.NewFSM()
	mustOK(t, apply(t, f, cmd(govfsm.OpCreateTenant, "c0", "acme", withAnchor(devAnchor), withRegions("ap", "eu", "us"))))
	setRegions := func(rid, home string, regions ...string) *govfsm.Result {
		return apply(t, f, cmd(govfsm.OpSetRegions, rid, "acme", withRegions(regions...), func(c *govfsm.Command) { c.Home = home }))
	}
	mustErr(t, setRegions("r-other", "eu", "eu", "us"), govfsm.ErrInvalidCommand) // the regions stay as they are
	mustErr(t, setRegions("r-home", "xx", "ap", "eu", "us"), govfsm.ErrInvalidCommand)
	e := mustOK(t, setRegions("r1", "eu", "ap", "eu", "us")).Event
	if e.Kind != govfsm.KindSetRegions || e.Home != "eu" || !slices.Equal(e.Regions, []string{"ap", "eu", "us"}) {
		t.Fatalf("SET_REGIONS making the tenant shared: %+v", e)
	}
	mustErr(t, setRegions("r-move", "us", "ap", "eu", "us"), govfsm.ErrInvalidCommand) // the home does not move
	_, _, floor, pending, err := f.TenantAnchors("acme")
	if err != nil || !slices.Equal(pending, []string{"ap", "us"}) || floor == nil || floor.L2 != 0 {
		t.Fatalf("before any report: floor %+v pending %v err %v", floor, pending, err)
	}
	if tn, _ := f.Tenant("acme"); !slices.Equal(tn.FloorPending, []string{"ap", "us"}) || tn.Home != "eu" {
		t.Fatalf("the tenant made shared: %+v", tn)
	}
	report := func(rid, region string, fl govfsm.Floor) *govfsm.Result {
		return apply(t, f, cmd(govfsm.OpPublishKeys, rid, "acme", func(c *govfsm.Command) { c.Region, c.Floor = region, &fl }))
	}
	if !f.FloorWanted("acme", "us") || f.FloorWanted("acme", "eu") {
		t.Fatal("FloorWanted: us is wanted, the home never")
	}
	head := f.Head()
	mustOK(t, report("f-us", "us", govfsm.Floor{L2: 2, Services: map[string]uint32{"pay": 3}}))
	mustOK(t, report("f-us-again", "us", govfsm.Floor{L2: 9, Services: map[string]uint32{"pay": 9}})) // once only
	mustOK(t, report("f-ap", "ap", govfsm.Floor{L2: 1, Services: map[string]uint32{"pay": 1, "log": 4}}))
	if f.Head() != head {
		t.Fatal("a floor report made an event")
	}
	_, _, floor, pending, _ = f.TenantAnchors("acme")
	if len(pending) != 0 || floor.L2 != 2 || floor.Services["pay"] != 3 || floor.Services["log"] != 4 {
		t.Fatalf("after every report: floor %+v pending %v", floor, pending)
	}
	// A tenant shared from its start has no floor.
	mustOK(t, apply(t, f, cmd(govfsm.OpCreateTenant, "c1", "born", withAnchor(devAnchor), withRegions("eu", "us"), func(c *govfsm.Command) { c.Home = "eu" })))
	if _, _, floor, pending, _ := f.TenantAnchors("born"); floor != nil || len(pending) != 0 {
		t.Fatalf("a tenant shared from its start: floor %+v pending %v", floor, pending)
	}
}

// TestSetRegionsConsent: the state machine itself holds a set-regions that adds a region or sets a
// home (OwnerRule) to the owner's consent, against the owner key it holds when it applies, once;
// a removal needs none, and an entry from before the rule replays as it applied.
func TestSetRegionsConsent(t *testing.T) {
	f := govfsm.NewFSM()
	k := ownertest.New(t)
	now := func(c *govfsm.Command) { c.Time = time.Now().UnixNano() }
	withOwner := func(c *govfsm.Command) { c.OwnerKey, c.Home = k.Public, "eu" }
	mustOK(t, apply(t, f, cmd(govfsm.OpCreateTenant, "c0", "acme", withAnchor(devAnchor), withRegions("eu", "us"), withOwner, now)))
	set := func(rid, consent string, rule bool, regions ...string) *govfsm.Result {
		return apply(t, f, cmd(govfsm.OpSetRegions, rid, "acme", withRegions(regions...), now, func(c *govfsm.Command) { c.Consent, c.OwnerRule = consent, rule }))
	}
	consent := func(rid string, regions ...string) string {
		return k.Consent(t, owner.Statement{Tenant: "acme", Op: owner.OpSetRegions, Regions: strings.Join(regions, ","), RequestID: rid})
	}
	mustErr(t, set("r1", "", true, "ap", "eu", "us"), govfsm.ErrConsentDenied)
	mustErr(t, set("r1", consent("r1", "eu", "us", "za"), true, "ap", "eu", "us"), govfsm.ErrConsentDenied)
	r := mustOK(t, set("r1", consent("r1", "ap", "eu", "us"), true, "ap", "eu", "us"))
	if r.Previous != k.Fingerprint() {
		t.Fatalf("consenting key %q, want %q", r.Previous, k.Fingerprint())
	}
	mustOK(t, set("r2", "", true, "eu", "us"))                                       // a removal: no consent
	mustErr(t, set("r3", consent("r3", "eu"), true, "eu"), govfsm.ErrInvalidCommand) // nor takes one
	mustOK(t, set("r4", "", false, "ap", "eu", "us"))                                // from before the rule
	mustErr(t, set("r5", consent("r1", "ap", "eu", "us"), true, "eu", "us", "za"), govfsm.ErrConsentDenied)
}
