package netutil

import (
	"net"
	"strconv"
	"testing"
)

func TestFreePortIsFreeAndNotReissued(t *testing.T) {
	seen := map[int]bool{}
	for range 50 {
		port, err := FreePort(true)
		if err != nil {
			t.Fatal(err)
		}
		if seen[port] {
			t.Fatalf("port %d handed out twice", port)
		}
		seen[port] = true
		if port < portLow || port >= portHigh {
			t.Fatalf("port %d outside [%d, %d)", port, portLow, portHigh)
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			t.Fatalf("port %d is not free: %v", port, err)
		}
		l.Close()
	}
}
