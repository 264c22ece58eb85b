package region_test

import (
	"bytes"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/region"
	"github.com/kryptonkms/krypton/region/regiontest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// A node started without -dev-anchor refuses a tenant on file://...?create=1 before the file
// provider touches anything: no directory, no key file (issue 14, finding 9).
func TestFileAnchorOnProductionNodeMakesNothing(t *testing.T) {
	r := regiontest.Start(t, 1, regiontest.WithConfig(func(c *region.Config) { c.AllowDevAnchor = false }))
	dir := filepath.Join(t.TempDir(), "x")
	_, err := r.AdminClient(0).CreateTenant(ctxShort(t), &kv1.CreateTenantRequest{
		RequestId: "dev-anchor-1", Tenant: "acme", AnchorUri: "file://" + filepath.Join(dir, "y") + "?create=1"})
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("CreateTenant on file://...?create=1 without -dev-anchor: %v, want InvalidArgument", err)
	}
	if _, err := os.Lstat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the refused tenant's anchor made %s (Lstat: %v)", dir, err)
	}
	if _, err := r.AdminClient(0).DescribeTenant(ctxShort(t), &kv1.DescribeTenantRequest{Tenant: "acme"}); status.Code(err) != codes.NotFound {
		t.Fatalf("DescribeTenant after the refusal: %v, want NotFound", err)
	}
}

// A pkcs11 URI with pin-value is refused by the region's CreateTenant and RekeyTenant before
// anything is opened or proposed, with InvalidArgument naming pin-source; the PIN reaches no
// file under the data directory (Raft log, snapshots, audit log), no log line and no answer
// (issue 14, finding 5).
func TestPINValueRefusedByRegion(t *testing.T) {
	const pin = "Pin-region-refused-61be03d4"
	logs := &syncBuffer{}
	r := regiontest.Start(t, 1, regiontest.WithLogs(logs))
	admin := r.AdminClient(0)
	createTenant(t, admin, r.Anchor, "acme", "pay")
	uri := "pkcs11:token=krypton;object=root?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-value=" + pin
	refused := func(what string, err error) {
		t.Helper()
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "pin-source") {
			t.Fatalf("%s with pin-value: %v, want InvalidArgument naming pin-source", what, err)
		}
		if strings.Contains(err.Error(), pin) {
			t.Fatalf("%s's error shows the PIN: %v", what, err)
		}
	}
	_, err := admin.CreateTenant(ctxShort(t), &kv1.CreateTenantRequest{RequestId: "pin-create", Tenant: "hsm", AnchorUri: uri})
	refused("CreateTenant", err)
	_, err = admin.RekeyTenant(ctxShort(t), &kv1.RekeyTenantRequest{RequestId: "pin-rekey", Tenant: "acme", AnchorUri: uri})
	refused("RekeyTenant", err)

	list, err := admin.ListTenants(ctxShort(t), &kv1.ListTenantsRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.GetTenants()) != 1 || list.GetTenants()[0].GetAnchorUri() != r.Anchor {
		t.Fatalf("tenants after the refusals: %v, want acme alone on its own anchor", list.GetTenants())
	}
	r.Close() // flush and release every file before scanning
	if bytes.Contains(logs.Bytes(), []byte(pin)) {
		t.Error("a log line shows the PIN")
	}
	err = filepath.WalkDir(r.Cfgs[0].DataDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if bytes.Contains(b, []byte(pin)) {
			t.Errorf("%s holds the PIN", path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}
