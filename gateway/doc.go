// Package gateway will run beside applications: it generates L4 data keys locally, has them wrapped
// and unwrapped by region nodes (batching concurrent requests into batch RPCs, discovering and
// balancing across nodes), and offers gRPC and KMIP front ends to applications.
package gateway
