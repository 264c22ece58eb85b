// Package jepsen will hold the black-box chaos harness: it runs real krypton processes, drives
// concurrent clients through the public APIs, injects faults (kills, pauses, partitions, anchor
// failures), records a history and checks it (linearizability, no acknowledged write lost, nothing
// revoked used again).
package jepsen
