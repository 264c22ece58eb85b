package main

// The L1 providers a krypton binary speaks: each registers its anchor URI scheme. They are wired
// here, in cmd, rather than in region, so that the region package does not force cgo (pkcs11) or
// every cloud SDK on its other users.
import (
	_ "github.com/kryptonkms/krypton/anchor/awskms"
	_ "github.com/kryptonkms/krypton/anchor/azurekv"
	_ "github.com/kryptonkms/krypton/anchor/file"
	_ "github.com/kryptonkms/krypton/anchor/gcpkms"
	_ "github.com/kryptonkms/krypton/anchor/pkcs11"
)
