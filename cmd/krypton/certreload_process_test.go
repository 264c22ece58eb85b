package main

import (
	"context"
	"crypto/tls"
	"math/big"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kryptonkms/krypton/internal/netutil"
	"github.com/kryptonkms/krypton/internal/pki"
)

// TestServerReloadsOnSIGHUP runs a real `krypton server`: SIGHUP no longer stops it but reloads its
// certificate files; after `krypton certs node` has replaced them, new handshakes present the new
// certificate's serial without a restart. SIGTERM still stops it cleanly.
func TestServerReloadsOnSIGHUP(t *testing.T) {
	dir := t.TempDir()
	kryptonOK(t, dir, "certs", "ca", "-dir", "pki")
	kryptonOK(t, dir, "certs", "node", "-dir", "pki", "-region", "dev", "node-1")
	kryptonOK(t, dir, "certs", "operator", "-dir", "pki", "admin")
	addr := func(udp bool) string {
		port, err := netutil.FreePort(udp)
		if err != nil {
			t.Fatal(err)
		}
		return net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	}
	api, raftAddr, gossip := addr(false), addr(false), addr(true)
	server := exec.Command(kryptonPath(t), "server", "-node-id", "node-1", "-data-dir", "n1", "-bootstrap-expect", "1",
		"-api-addr", api, "-raft-addr", raftAddr, "-gossip-addr", gossip,
		"-ca-cert", "pki/ca.pem", "-cert", "pki/node-node-1.pem", "-key", "pki/node-node-1-key.pem")
	server.Dir = dir
	server.Env = append(os.Environ(), "KRYPTON_GOSSIP_KEY=MDEyMzQ1Njc4OTAxMjM0NTY3ODkwMTIzNDU2Nzg5MDE=")
	var logs lockedBuffer
	server.Stdout, server.Stderr = &logs, &logs
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server output:\n%s", logs.String())
		}
	})
	proc := startProcess(t, server)

	roots, err := pki.LoadCertPool(dir + "/pki/ca.pem")
	if err != nil {
		t.Fatal(err)
	}
	op, err := pki.LoadCertificate(dir+"/pki/operator-admin.pem", dir+"/pki/operator-admin-key.pem")
	if err != nil {
		t.Fatal(err)
	}
	served := func() (*big.Int, error) {
		d := &tls.Dialer{Config: pki.ClientTLSConfig(roots, op.TLSCertificate(), "127.0.0.1")}
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		c, err := d.DialContext(ctx, "tcp", api)
		if err != nil {
			return nil, err
		}
		defer c.Close()
		return c.(*tls.Conn).ConnectionState().PeerCertificates[0].SerialNumber, nil
	}
	fileSerial := func() *big.Int {
		c, err := pki.LoadCertificate(dir+"/pki/node-node-1.pem", dir+"/pki/node-node-1-key.pem")
		if err != nil {
			t.Fatal(err)
		}
		return c.Leaf().SerialNumber
	}
	waitServed := func(want *big.Int, what string) {
		t.Helper()
		deadline := time.Now().Add(90 * time.Second)
		for {
			got, err := served()
			if err == nil && got.Cmp(want) == 0 {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: the API presents %v (%v), want serial %v", what, got, err, want)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	waitServed(fileSerial(), "at start")

	if err := server.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(logs.String(), "SIGHUP: reloading the certificate files") {
		if time.Now().After(deadline) {
			t.Fatal("no reload logged after SIGHUP")
		}
		time.Sleep(20 * time.Millisecond)
	}
	select {
	case <-proc.done:
		t.Fatalf("the server stopped on SIGHUP: %v", proc.err)
	default:
	}

	kryptonOK(t, dir, "certs", "node", "-dir", "pki", "-region", "dev", "node-1")
	if err := server.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitServed(fileSerial(), "after the files were replaced")

	if err := server.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}
	if err := proc.exited(t, 60*time.Second, "SIGTERM"); err != nil {
		t.Errorf("the server exited with %v after SIGTERM, want code 0", err)
	}
}
