// Package governance will hold the governance plane: its own Raft cluster (reusing cluster) whose
// state is the tenants, each tenant's L1 anchor URI and regions, services, access policy and the
// ordered revocation log, and the stream that feeds each region's leader. It never encrypts.
package governance
