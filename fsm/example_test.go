package fsm_test

import (
	"errors"
	"fmt"

	"github.com/kryptonkms/krypton/fsm"
)

func Example() {
	s := fsm.NewState(fsm.Options{OnChange: func(c fsm.Change) {
		fmt.Println("change:", c.Kind, c.Tenant, c.Service, c.Version)
	}})
	apply := func(index uint64, c fsm.Command) {
		if _, err := s.Apply(index, fsm.Entry{At: int64(index), Command: c}); err != nil {
			fmt.Println("refused:", err)
		}
	}
	apply(1, fsm.CreateTenant{Tenant: "acme", Anchor: "file:///dev/l1", SealedL2: []byte("l2 sealed by l1")})
	apply(2, fsm.CreateService{Tenant: "acme", Service: "payments", SealedL3: []byte("l3v1 sealed by l2v1"), SealedBy: 1})
	apply(3, fsm.RotateServiceKey{Tenant: "acme", Service: "payments", Version: 2, SealedL3: []byte("l3v2"), SealedBy: 1})
	apply(4, fsm.RotateServiceKey{Tenant: "acme", Service: "payments", Version: 2, SealedL3: []byte("l3v2"), SealedBy: 1})

	v, err := s.Usable("acme", "payments", 0, fsm.OpWrap)
	fmt.Println("wrap with version", v, err)
	_, err = s.Usable("acme", "payments", 1, fsm.OpWrap)
	fmt.Println("wrap with version 1:", err)

	apply(5, fsm.RevokeService{Tenant: "acme", Service: "payments", Reason: "compromised"})
	_, err = s.Usable("acme", "payments", 1, fsm.OpUnwrap)
	fmt.Println("unwrap after revocation:", errors.Is(err, fsm.ErrRevoked), "applied", s.AppliedIndex())
	// Output:
	// change: tenant-created acme  1
	// change: service-created acme payments 1
	// change: service-key-rotated acme payments 2
	// refused: fsm: unexpected key version (tenant "acme", service "payments", version 2)
	// wrap with version 2 <nil>
	// wrap with version 1: fsm: key version is decrypt-only
	// change: service-revoked acme payments 0
	// unwrap after revocation: true applied 5
}
