package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kryptonkms/krypton/anchor"
)

// owner runs a `krypton owner` command line (the customer's side: it dials nothing) and returns
// its stdout.
func (c *cliRegion) owner(args ...string) string {
	c.t.Helper()
	stdout, stderr := c.tempFile("stdout"), c.tempFile("stderr")
	code := run(context.Background(), append([]string{"owner"}, args...), stdout, stderr)
	out, errOut := readBack(c.t, stdout), readBack(c.t, stderr)
	if code != 0 {
		c.t.Fatalf("krypton owner %s: exit %d: %s", strings.Join(args, " "), code, errOut)
	}
	return out
}

// TestCLIRegionOwnerConsent: on a region that is not governed, the customer makes an owner key,
// the operator creates the tenant with its public half (`tenant create -owner-pub`), and
// `tenant rekey` needs the owner's consent (`-consent`, made with `krypton owner consent -op rekey
// -region`): without one the CLI refuses before dialling, with the operator's own the region
// refuses (PermissionDenied), the owner's works and a retry is the same request. The owner hands
// over to a new key with `tenant set-owner -consent`.
func TestCLIRegionOwnerConsent(t *testing.T) {
	c := startCLIRegion(t)
	leader := c.r.Leader()
	key, next, mallory := filepath.Join(c.dir, "owner.key"), filepath.Join(c.dir, "next.key"), filepath.Join(c.dir, "mallory.key")
	fp := func(out string) string {
		_, after, _ := strings.Cut(out, "Fingerprint: ")
		return strings.TrimSpace(after)
	}
	ownerFP := fp(c.owner("keygen", "-out", key))
	nextFP := fp(c.owner("keygen", "-out", next))
	c.owner("keygen", "-out", mallory)

	c.ok(leader, c.op, "tenant", "create", "-anchor", c.r.Anchor, "-owner-pub", key+".pub", "acme")
	if out := c.ok(leader, c.op, "tenant", "describe", "acme"); !strings.Contains(out, ownerFP) {
		t.Fatalf("describe does not show the owner key %s:\n%s", ownerFP, out)
	}
	uri := "file://" + filepath.Join(c.dir, "new-root.key")
	p, err := anchor.Open(context.Background(), uri, anchor.Options{Create: true})
	if err != nil {
		t.Fatal(err)
	}
	p.Close()

	c.fails(leader, c.op, 2, "-consent is required: the tenant's owner makes one with `krypton owner consent -key <owner.key> -op rekey", "tenant", "rekey", "-anchor", uri, "acme")
	forged := filepath.Join(c.dir, "forged.jws")
	c.owner("consent", "-key", mallory, "-op", "rekey", "-anchor", uri, "-region", "test", "-out", forged, "acme")
	c.fails(leader, c.op, 1, "PermissionDenied", "tenant", "rekey", "-anchor", uri, "-consent", forged, "acme")

	consent := filepath.Join(c.dir, "rekey.jws")
	c.owner("consent", "-key", key, "-op", "rekey", "-anchor", uri, "-region", "test", "-out", consent, "acme")
	follower := c.r.Followers()[0]
	if out := c.ok(follower, c.op, "tenant", "rekey", "-anchor", uri, "-consent", consent, "acme"); !strings.Contains(out, "new-root.key") {
		t.Fatalf("rekey output:\n%s", out)
	}
	c.ok(leader, c.op, "tenant", "rekey", "-anchor", uri, "-consent", consent, "acme") // a retry: the same request id

	handover := filepath.Join(c.dir, "handover.jws")
	c.owner("consent", "-key", key, "-op", "set-owner", "-owner-pub", next+".pub", "-region", "test", "-out", handover, "acme")
	c.fails(leader, c.op, 1, "PermissionDenied", "tenant", "set-owner", "-owner-pub", mallory+".pub", "acme")
	if out := c.ok(leader, c.op, "tenant", "set-owner", "-owner-pub", next+".pub", "-consent", handover, "acme"); !strings.Contains(out, nextFP) {
		t.Fatalf("set-owner output does not show the new key %s:\n%s", nextFP, out)
	}
}
