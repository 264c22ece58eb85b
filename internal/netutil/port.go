// Package netutil holds small network helpers shared by the development region and the tests.
package netutil

import (
	"errors"
	"net"
	"strconv"
)

// FreePort returns a port that is free on 127.0.0.1 for TCP, and for UDP too when udp is set
// (memberlist binds both). The port is only free when it is probed: another process may take it
// before the caller binds it, which is good enough for tests and `krypton dev`, not for servers.
func FreePort(udp bool) (int, error) {
	for range 50 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if udp {
			u, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(port)))
			if err != nil {
				continue
			}
			u.Close()
		}
		return port, nil
	}
	return 0, errors.New("netutil: no free port on 127.0.0.1")
}
