// Command image writes Krypton's OCI image layout from a built binary, with no container engine
// and no registry (scripts/image.sh builds the binary and runs it; docs/operations.md, "Deploy").
//
//	go run ./deploy/image -binary bin/krypton -out bin/image -tag 0.1.0
//
// Every file and the image carry the time SOURCE_DATE_EPOCH (seconds since 1970) names, so the same
// binary, C library and CA bundle give the same digest.
package main

import (
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"time"

	"github.com/kryptonkms/krypton/internal/ociimage"
)

func main() {
	binary := flag.String("binary", "bin/krypton", "the krypton binary to put in the image")
	out := flag.String("out", "bin/image", "directory to write the OCI image layout into (must not hold one)")
	tag := flag.String("tag", "latest", "the tag (org.opencontainers.image.ref.name) of the image in the layout")
	ca := flag.String("ca-bundle", "/etc/ssl/certs/ca-certificates.crt", "PEM bundle of public CAs to put in the image")
	version := flag.String("version", "dev", "the version label")
	revision := flag.String("revision", "unknown", "the commit label")
	flag.Parse()
	if err := run(*binary, *out, *tag, *ca, *version, *revision); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(binary, out, tag, ca, version, revision string) error {
	epoch := os.Getenv("SOURCE_DATE_EPOCH")
	if epoch == "" {
		return fmt.Errorf("SOURCE_DATE_EPOCH is not set: set it to the commit's time, SOURCE_DATE_EPOCH=$(git log -1 --format=%%ct)")
	}
	secs, err := strconv.ParseInt(epoch, 10, 64)
	if err != nil {
		return fmt.Errorf("SOURCE_DATE_EPOCH=%q: want seconds since 1970", epoch)
	}
	o := ociimage.KryptonOptions{Binary: binary, CABundle: ca, Version: version, Revision: revision}
	files, err := ociimage.KryptonFiles(o)
	if err != nil {
		return err
	}
	w, err := ociimage.Build(out, ociimage.Image{
		Files: files, Config: ociimage.KryptonConfig(o), Created: time.Unix(secs, 0), Arch: runtime.GOARCH, RefName: tag,
	})
	if err != nil {
		return err
	}
	fmt.Printf("image %s:%s\nmanifest %s\nlayer %s (%d bytes compressed)\n", out, tag, w.Manifest, w.Layer, w.Size)
	return nil
}
