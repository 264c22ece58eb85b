// Package gateway runs beside applications and gives them data keys at the edge: it makes each
// L4 data key as a wrap.DataKey (crypto/rand) and has a region wrap it under the gateway's service
// key (L3), or unwrap one again. Concurrent requests are coalesced into the region's packed batch
// RPCs (PackedWrap, PackedUnwrap; BatchWrap and BatchUnwrap to a node of an older version); the
// region's nodes are discovered from the region itself (WrapService.ListEndpoints) and calls are
// balanced over the serving ones, failing over when one dies or has no lease. An optional cache of
// unwrapped data keys (memguard) is kept exact under revocation by the region's key-event stream
// (WrapService.WatchKeyEvents) and a short cache lease.
//
// Applications reach it over gRPC (krypton.v1.GatewayService: Encrypt, Decrypt, GenerateDataKey,
// Unwrap) on TCP with mutual TLS or on a Unix socket, over KMIP (package gateway/kmip), or through
// package client. Encrypt's ciphertext format is package envelope's. docs/gateway.md
// explains deployment, configuration, batching, the cache and the format.
//
//	cfg := gateway.DefaultConfig()
//	cfg.RegionAddrs = []string{"10.0.0.1:7400"}
//	cfg.Roots, cfg.Certificate = roots, serviceCert // the identity the gateway acts for
//	cfg.UnixSocket = "/run/krypton/gateway.sock"
//	g, err := gateway.New(cfg)
//	...
//	go g.Serve()
//	defer g.Close()
//	ct, _, err := g.Encrypt(ctx, wrap.KeyID{}, data, context) // in process, as the front ends do
package gateway
