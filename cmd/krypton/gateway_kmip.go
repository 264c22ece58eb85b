package main

import (
	"github.com/kryptonkms/krypton/gateway"
)

// startKMIP starts the KMIP front end (package gateway/kmip) on f.kmipAddr with the gateway's
// data keys (gateway.KMIPKeys), and returns a function that stops it.
//
// Hook: the KMIP server is being built beside this command; until it is wired here, -kmip-addr is
// refused rather than ignored.
func startKMIP(f *gatewayFlags, cfg gateway.Config, g *gateway.Gateway) (stop func(), err error) {
	if f.kmipAddr == "" {
		return func() {}, nil
	}
	return nil, usagef("gateway: -kmip-addr: the KMIP front end is not built into this binary yet")
}
