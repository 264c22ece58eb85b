// Package kryptonv1 is the generated Go code of Krypton's gRPC API, protobuf
// package krypton.v1: WrapService (wrap, unwrap, data keys, batches),
// AdminService (operators: membership, snapshots, tenants, keys),
// NodeService (node to node: HPKE-sealed tenant keys, serving leases,
// fences) and GovernanceService (tenants, anchors, policy, the revocation
// log).
//
// The sources are proto/krypton/v1/*.proto; docs/api.md explains the
// services and the error model. Every *.pb.go file here is generated: edit
// the .proto files and run `make proto` (scripts/genproto.sh), never the
// generated code. CI runs `scripts/genproto.sh --check` to fail on stale code.
//
// Hand-written files in this package hold only small helpers for the
// generated types (itemerror.go) and tests. The test TestNoKeyMaterialFields
// fails if any message gains a field named like key material beyond the L4
// plaintext fields of WrapService.
//
// A client:
//
//	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(creds))
//	if err != nil { … }
//	c := kryptonv1.NewWrapServiceClient(conn)
//	resp, err := c.GenerateDataKey(ctx, &kryptonv1.GenerateDataKeyRequest{
//		Key: &kryptonv1.KeyRef{Tenant: "acme", Service: "billing"},
//	})
package kryptonv1
