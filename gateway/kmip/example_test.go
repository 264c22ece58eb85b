package kmip_test

import (
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"

	"github.com/kryptonkms/krypton/gateway/kmip"
	"github.com/kryptonkms/krypton/gateway/kmip/kmiptest"
	"github.com/kryptonkms/krypton/gateway/kmip/ttlv"
	"github.com/kryptonkms/krypton/internal/netutil"
	"github.com/kryptonkms/krypton/internal/pki"
)

// Example starts a KMIP server with a throwaway CA and asks it, as a client
// with a service certificate, which protocol versions it speaks.
func Example() {
	ca, _ := pki.NewCA("example CA", 0)
	serverCert, _ := ca.IssueGateway("acme", "gateway-1", pki.NodeOptions{})
	keys := kmiptest.NewKeys() // the gateway core passes gateway.KMIPKeys here
	defer keys.Close()

	srv, err := kmip.New(kmip.Config{
		ClientCAs:   ca.Pool(),
		Certificate: serverCert.TLSCertificate(),
		Logger:      slog.New(slog.NewTextHandler(io.Discard, nil)),
	}, keys)
	if err != nil {
		panic(err)
	}
	defer srv.Close()
	port, _ := netutil.FreePort(false)
	addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	l, err := net.Listen("tcp", addr)
	if err != nil {
		panic(err)
	}
	go srv.Serve(l)

	client, _ := ca.IssueService("acme", "orders-db", 0)
	conn, err := tls.Dial("tcp", addr, pki.ClientTLSConfig(ca.Pool(), client.TLSCertificate(), "127.0.0.1"))
	if err != nil {
		panic(err)
	}
	defer conn.Close()
	req := ttlv.Struct(ttlv.TagRequestMessage,
		ttlv.Struct(ttlv.TagRequestHeader,
			ttlv.Struct(ttlv.TagProtocolVersion,
				ttlv.Int(ttlv.TagProtocolVersionMajor, 2), ttlv.Int(ttlv.TagProtocolVersionMinor, 0)),
			ttlv.Int(ttlv.TagBatchCount, 1)),
		ttlv.Struct(ttlv.TagBatchItem,
			ttlv.Enum(ttlv.TagOperation, ttlv.OpDiscoverVersions),
			ttlv.Struct(ttlv.TagRequestPayload)))
	if _, err := conn.Write(ttlv.Marshal(req)); err != nil {
		panic(err)
	}
	raw, err := ttlv.ReadMessage(conn, 1<<16)
	if err != nil {
		panic(err)
	}
	resp, err := ttlv.Decode(raw, ttlv.DefaultLimits())
	if err != nil {
		panic(err)
	}
	for _, v := range resp.Child(ttlv.TagBatchItem).Child(ttlv.TagResponsePayload).All(ttlv.TagProtocolVersion) {
		fmt.Printf("KMIP %d.%d\n", v.Child(ttlv.TagProtocolVersionMajor).Int, v.Child(ttlv.TagProtocolVersionMinor).Int)
	}
	// Output:
	// KMIP 2.0
	// KMIP 1.4
	// KMIP 1.3
	// KMIP 1.2
}
