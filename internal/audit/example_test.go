package audit_test

import (
	"bytes"
	"fmt"
	"time"

	"github.com/kryptonkms/krypton/internal/audit"
)

func Example() {
	var buf bytes.Buffer
	log, err := audit.New(&buf, audit.Options{
		Node: "node-1",
		// A fixed clock, so that the lines and hashes below are reproducible.
		Now: func() time.Time { return time.Date(2026, 1, 2, 3, 4, 5, 600, time.UTC) },
	})
	if err != nil {
		panic(err)
	}
	events := []audit.Event{
		{Kind: audit.KindKeyCreate, Actor: "operator:alice", Tenant: "acme", Version: 1},
		{Kind: audit.KindCallRefused, Actor: "service:billing", Tenant: "acme",
			Code: "PermissionDenied", Reason: "not a member of acme", RequestID: "r-42"},
	}
	for _, e := range events {
		if err := log.Record(e); err != nil {
			panic(err)
		}
	}
	if err := log.Close(); err != nil {
		panic(err)
	}
	fmt.Print(buf.String())

	res, err := audit.Verify(&buf)
	if err != nil {
		panic(err)
	}
	fmt.Println("verified", res.Lines, "lines, last hash", res.LastHash)
	// Output:
	// {"time":"2026-01-02T03:04:05.0000006Z","seq":1,"node":"node-1","kind":"key.create","actor":"operator:alice","tenant":"acme","version":1,"prev":"efd246aa3b59574d55bb7771d4714e924c9d3a70c31f6b9d0f0ba0655497af43","hash":"bec9f226daf7b87474ab73a8b4d60da576cb43bc6d33e772df6bd5a479e1bb9a"}
	// {"time":"2026-01-02T03:04:05.0000006Z","seq":2,"node":"node-1","kind":"call.refused","actor":"service:billing","tenant":"acme","code":"PermissionDenied","reason":"not a member of acme","request-id":"r-42","prev":"bec9f226daf7b87474ab73a8b4d60da576cb43bc6d33e772df6bd5a479e1bb9a","hash":"cbbdfbdc0bd226a863300fd95d36402100b7fbc61b8d4393a462b29194b4195a"}
	// verified 2 lines, last hash cbbdfbdc0bd226a863300fd95d36402100b7fbc61b8d4393a462b29194b4195a
}
