// Package client is the Go library applications use to encrypt and decrypt their data with
// Krypton: envelope encryption, one self-contained ciphertext per message (docs/gateway.md,
// "Ciphertext format"), bound to a context the application chooses (a record id, a table name)
// that must be presented again to decrypt.
//
// It works through a gateway (DialGateway over TLS, DialGatewayUnix on the same host), which makes
// the data keys at the edge and batches the region calls of many applications; or directly
// against a region's nodes (DialRegion), where each Encrypt asks a node for a data key and seals
// locally. Both make the same ciphertexts: data encrypted one way decrypts the other.
//
//	c, err := client.DialGatewayUnix("/run/krypton/gateway.sock")
//	...
//	defer c.Close()
//	ct, err := c.Encrypt(ctx, []byte("4111 1111 1111 1111"), []byte("customer=42"))
//	pt, err := c.Decrypt(ctx, ct, []byte("customer=42"))
package client

import (
	"context"
	"errors"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/kryptonkms/krypton/envelope"
	"github.com/kryptonkms/krypton/internal/pki"
	"github.com/kryptonkms/krypton/transport"
	kv1 "github.com/kryptonkms/krypton/transport/kryptonv1"
)

// Client encrypts and decrypts through a gateway or directly against a region. It is safe for
// concurrent use.
type Client struct {
	gw    kv1.GatewayServiceClient // gateway mode
	nodes []kv1.WrapServiceClient  // direct mode, tried in turn
	key   *kv1.KeyRef              // direct mode: the service key
	conns []*grpc.ClientConn
}

// DialGateway connects to a gateway's TCP front end with mutual TLS; cfg holds the CA and the
// application's service certificate (of the gateway's tenant). The server must present a gateway
// certificate of that tenant (spiffe://krypton/tenant/<tenant>/gateway/<name>) unless cfg.Server
// says otherwise (to name the gateway, say): a node's or another tenant's gateway's certificate is
// refused at the handshake, before any data is sent.
func DialGateway(ctx context.Context, addr string, cfg transport.ClientConfig) (*Client, error) {
	if cfg.Server.Kind == 0 {
		cfg.Server = pki.Identity{Kind: pki.KindGateway}
		if id, err := pki.LeafIdentity(cfg.Certificate); err == nil && id.Kind == pki.KindService {
			cfg.Server.Tenant = id.Tenant
		} else {
			return nil, errors.New("client: DialGateway needs a service certificate (of the gateway's tenant) or cfg.Server")
		}
	}
	conn, err := transport.Dial(ctx, addr, cfg)
	if err != nil {
		return nil, err
	}
	return &Client{gw: kv1.NewGatewayServiceClient(conn), conns: []*grpc.ClientConn{conn}}, nil
}

// DialGatewayUnix connects to a gateway's Unix socket (no TLS: the socket's file mode says who
// may connect).
func DialGatewayUnix(path string) (*Client, error) {
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithConnectParams(transport.ReconnectParams())) // a restarted gateway is reached again within seconds
	if err != nil {
		return nil, err
	}
	return &Client{gw: kv1.NewGatewayServiceClient(conn), conns: []*grpc.ClientConn{conn}}, nil
}

// NewGateway uses an existing connection to a gateway; Close leaves it open.
func NewGateway(conn grpc.ClientConnInterface) *Client {
	return &Client{gw: kv1.NewGatewayServiceClient(conn)}
}

// DialRegion connects directly to region nodes with a service certificate (cfg) for
// tenant/service. Encrypt asks a node for a data key (GenerateDataKey) and seals locally; Decrypt
// has a node unwrap it. A node that answers UNAVAILABLE (down, or without a serving lease) is
// passed over for the next one. Each server must present a node certificate of region (the
// region's name, required): a node of another region, though of the same CA, is refused at the
// handshake, before anything is sent. cfg.Server, if set, must name a node of that region.
func DialRegion(ctx context.Context, region string, addrs []string, cfg transport.ClientConfig, tenant, service string) (*Client, error) {
	if len(addrs) == 0 {
		return nil, errors.New("client: no region address")
	}
	if region == "" {
		return nil, errors.New("client: DialRegion needs the region's name, so that a node of another region is refused")
	}
	switch {
	case cfg.Server.Kind == 0:
		cfg.Server = pki.Identity{Kind: pki.KindNode, Region: region}
	case cfg.Server.Kind != pki.KindNode || cfg.Server.Region != region:
		return nil, errors.New("client: DialRegion's cfg.Server must name a node of the region given")
	}
	c := &Client{key: &kv1.KeyRef{Tenant: tenant, Service: service}}
	for _, a := range addrs {
		conn, err := transport.Dial(ctx, a, cfg)
		if err != nil {
			c.Close()
			return nil, err
		}
		c.conns = append(c.conns, conn)
		c.nodes = append(c.nodes, kv1.NewWrapServiceClient(conn))
	}
	return c, nil
}

// Close closes the connections the client made.
func (c *Client) Close() error {
	var err error
	for _, conn := range c.conns {
		err = errors.Join(err, conn.Close())
	}
	c.conns = nil
	return err
}

// Encrypt seals data under a fresh data key bound to context and returns the ciphertext.
func (c *Client) Encrypt(ctx context.Context, data, context []byte) ([]byte, error) {
	if c.gw != nil {
		resp, err := c.gw.Encrypt(ctx, &kv1.EncryptRequest{Data: data, Context: context})
		if err != nil {
			return nil, err
		}
		return resp.GetCiphertext(), nil
	}
	var resp *kv1.GenerateDataKeyResponse
	err := c.eachNode(ctx, func(n kv1.WrapServiceClient) (err error) {
		resp, err = n.GenerateDataKey(ctx, &kv1.GenerateDataKeyRequest{Key: c.key, Context: context})
		return err
	})
	if err != nil {
		return nil, err
	}
	defer clear(resp.GetPlaintext())
	ct, err := envelope.Seal(resp.GetPlaintext(), resp.GetBlob(), data, context)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return ct, nil
}

// Decrypt opens a ciphertext made by Encrypt (in either mode) with the same context.
func (c *Client) Decrypt(ctx context.Context, ciphertext, context []byte) ([]byte, error) {
	if c.gw != nil {
		resp, err := c.gw.Decrypt(ctx, &kv1.DecryptRequest{Ciphertext: ciphertext, Context: context})
		if err != nil {
			return nil, err
		}
		return resp.GetData(), nil
	}
	parsed, err := envelope.Parse(ciphertext)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	var resp *kv1.UnwrapResponse
	err = c.eachNode(ctx, func(n kv1.WrapServiceClient) (err error) {
		resp, err = n.Unwrap(ctx, &kv1.UnwrapRequest{Blob: parsed.Blob, Context: context})
		return err
	})
	if err != nil {
		return nil, err
	}
	defer clear(resp.GetPlaintext())
	data, err := envelope.Open(resp.GetPlaintext(), parsed, context)
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	return data, nil
}

// eachNode calls f on one node after another until one answers with something other than
// UNAVAILABLE. Every call made here is a region read, safe to repeat.
func (c *Client) eachNode(ctx context.Context, f func(kv1.WrapServiceClient) error) error {
	var err error
	for _, n := range c.nodes {
		if err = f(n); status.Code(err) != codes.Unavailable || ctx.Err() != nil {
			return err
		}
	}
	return err
}
