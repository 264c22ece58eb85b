package wrap_test

import (
	"fmt"

	"github.com/kryptonkms/krypton/wrap"
)

// Example shows the hierarchy end to end: a tenant key seals a service
// key, which wraps a data key for an application, which gets it back by
// unwrapping with the same context.
func Example() {
	l2, err := wrap.NewTenantKey(wrap.KeyID{Tenant: "acme", Version: 1})
	if err != nil {
		panic(err)
	}
	defer l2.Destroy()

	l3ID := wrap.KeyID{Tenant: "acme", Service: "payments", Version: 1}
	l3, err := wrap.NewServiceKey(l3ID)
	if err != nil {
		panic(err)
	}
	defer l3.Destroy()

	// The leader seals the new service key under the tenant key; the
	// sealed blob is what the region FSM stores.
	sealed, err := l2.SealServiceKey(l3)
	if err != nil {
		panic(err)
	}
	h, _ := wrap.ParseHeader(sealed)
	fmt.Println("sealed:", h.Kind, "of", h.Subject, "under", h.Parent)

	// Any node holding the tenant key opens it again.
	opened, err := l2.OpenServiceKey(l3ID, sealed)
	if err != nil {
		panic(err)
	}
	defer opened.Destroy()
	fmt.Println("opened:", opened, opened.Equal(l3))

	// A data key is wrapped with the caller's context...
	dk := wrap.NewDataKey()
	defer dk.Destroy()
	blob, err := opened.Wrap(dk, []byte("bucket=invoices"))
	if err != nil {
		panic(err)
	}
	h, _ = wrap.ParseHeader(blob)
	fmt.Println("wrapped:", h.Kind, "under", h.Parent, len(blob), "bytes")

	// ...and unwraps only with the same context.
	back, err := l3.Unwrap(blob, []byte("bucket=invoices"))
	if err != nil {
		panic(err)
	}
	defer back.Destroy()
	fmt.Println("unwrapped:", back, back.Equal(dk))
	_, err = l3.Unwrap(blob, []byte("bucket=payroll"))
	fmt.Println("other context:", err)

	// Output:
	// sealed: sealed-service-key of acme/payments@v1 under acme@v1
	// opened: wrap.ServiceKey(acme/payments@v1, redacted) true
	// wrapped: wrapped-data-key under acme/payments@v1 114 bytes
	// unwrapped: wrap.DataKey(redacted) true
	// other context: wrap: message authentication failed
}
