package region_test

import (
	"strings"
	"testing"

	"google.golang.org/grpc/codes"

	"github.com/kryptonkms/krypton/region/regiontest"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// The region's List RPCs page as governance's do (transport.Page): next_page_token walks every
// tenant once, and a page_size out of range or a token the server did not hand out (a bare name,
// as the region took before) is refused with InvalidArgument.
func TestListPages(t *testing.T) {
	r := regiontest.Start(t, 1)
	admin := r.AdminClient(r.WaitLeader())
	for _, tn := range []string{"c", "a", "b"} {
		if _, err := admin.CreateTenant(ctxT(t), &kv1.CreateTenantRequest{RequestId: "t-" + tn, Tenant: tn, AnchorUri: r.Anchor}); err != nil {
			t.Fatal(err)
		}
	}
	var names []string
	token := ""
	for range 4 {
		resp, err := admin.ListTenants(ctxT(t), &kv1.ListTenantsRequest{PageSize: 2, PageToken: token})
		if err != nil {
			t.Fatal(err)
		}
		for _, tn := range resp.GetTenants() {
			names = append(names, tn.GetName())
		}
		if token = resp.GetNextPageToken(); token == "" {
			break
		}
	}
	if strings.Join(names, ",") != "a,b,c" {
		t.Fatalf("pages: %v", names)
	}
	_, err := admin.ListTenants(ctxT(t), &kv1.ListTenantsRequest{PageToken: "a"})
	wantCode(t, err, codes.InvalidArgument, "a bare name as page_token")
	_, err = admin.ListKeys(ctxT(t), &kv1.ListKeysRequest{Tenant: "a", PageSize: 1001})
	wantCode(t, err, codes.InvalidArgument, "page_size 1001")
}
