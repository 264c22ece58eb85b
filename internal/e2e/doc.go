// Package e2e holds Krypton's cross-plane end-to-end tests: a three-node governance cluster
// (governance/governancetest) feeding two three-node regions (region/regiontest) over real gRPC
// with mutual TLS on loopback. It has no non-test code.
//
// The revocation latency figures of the closing note of issue 5 come from
//
//	go test ./internal/e2e -run 'TestGovernance/revocation' -revocations=100 -v
//
// which prints the median and worst time from Revoke (with wait) at governance to its return,
// when every node of both regions refuses the revoked key.
package e2e
