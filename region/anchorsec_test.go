package region_test

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"
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
