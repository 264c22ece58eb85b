package pki_test

import (
	"fmt"

	"github.com/kryptonkms/krypton/internal/pki"
)

func Example() {
	ca, err := pki.NewCA("krypton dev CA", 0)
	if err != nil {
		panic(err)
	}
	svc, err := ca.IssueService("acme", "billing", 0)
	if err != nil {
		panic(err)
	}
	id, err := svc.Identity()
	if err != nil {
		panic(err)
	}
	fmt.Println(id.Kind, id.Tenant, id.Service)
	fmt.Println(id)
	// Output:
	// service acme billing
	// spiffe://krypton/tenant/acme/service/billing
}
