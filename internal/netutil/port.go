// Package netutil holds small network helpers: free ports for the development region and the
// tests, and the pre-authentication limits every TLS listener of Krypton is wrapped in
// (LimitHandshakes).
package netutil

import (
	"errors"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
)

// Ports are drawn at random below Linux's default ephemeral range (32768-60999): the kernel hands
// out ports from that range to every listener on port 0 and every outgoing connection, so a port
// probed there and released can be taken by another process (another test binary running beside
// this one) before the caller binds it. Below it, only other callers of this scheme compete, and
// each port is handed out once per process.
const (
	portLow  = 20000
	portHigh = 32000
)

var (
	mu     sync.Mutex
	issued = map[int]bool{}
)

// FreePort returns a port that is free on 127.0.0.1 for TCP, and for UDP too when udp is set
// (memberlist binds both), and that this process has not handed out before. It is only free when
// probed: good enough for tests and `krypton dev`, not for servers.
func FreePort(udp bool) (int, error) {
	mu.Lock()
	defer mu.Unlock()
	for range 200 {
		port := portLow + rand.IntN(portHigh-portLow)
		if issued[port] || !free(port, udp) {
			continue
		}
		issued[port] = true
		return port, nil
	}
	return 0, errors.New("netutil: no free port on 127.0.0.1")
}

func free(port int, udp bool) bool {
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return false
	}
	l.Close()
	if udp {
		u, err := net.ListenPacket("udp", addr)
		if err != nil {
			return false
		}
		u.Close()
	}
	return true
}
