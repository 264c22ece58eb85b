//go:build !linux

package jepsen

import "errors"

func newNetnsNet(int) (network, error) {
	return nil, errors.New("jepsen: network namespaces are Linux only")
}

func cleanStaleNamespaces() {}
