// Package rawio reads and writes sockets with raw system calls, so that a round trip does not
// wake the Go runtime's monitor thread (rawio_linux.go says why and what it keeps). On systems
// other than Linux, Wrap and Listener return what they are given.
package rawio
