// Package ociimage writes a one-layer OCI image layout (the directory form of the OCI image
// specification, which umoci, skopeo, podman and crane read) from a list of files, reproducibly:
// every tar header carries the same fixed time, numeric owners and no user or group names, entries
// are sorted, and the layer is compressed with the standard library's gzip at a fixed level with no
// name or time in its header. The same files, configuration and time therefore give the same
// manifest digest.
//
// Why hand-written rather than go-containerregistry's mutate/layout: the layer's tar is the part
// that decides reproducibility and every library would still need it built here; what remains (three
// JSON documents and a directory of blobs) is a few lines around the specification's own types
// (github.com/opencontainers/image-spec), with no registry client in the module.
package ociimage

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	_ "crypto/sha256" // go-digest's sha256 algorithm
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"time"

	digest "github.com/opencontainers/go-digest"
	specs "github.com/opencontainers/image-spec/specs-go"
	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// File is one entry of the image's root filesystem.
type File struct {
	Path     string      // absolute, slash-separated: /usr/local/bin/krypton
	Mode     fs.FileMode // permission bits, plus fs.ModeDir or fs.ModeSymlink for those kinds
	UID, GID int
	Data     []byte // a regular file's contents
	Link     string // a symlink's target
}

// Image is what Build writes.
type Image struct {
	Files   []File
	Config  v1.ImageConfig
	Created time.Time // every file's time and the image's creation time (SOURCE_DATE_EPOCH)
	Arch    string    // GOARCH naming: amd64, arm64
	// RefName is the org.opencontainers.image.ref.name of the manifest in index.json (a tag such
	// as "0.1.0"), so that `umoci unpack --image DIR:TAG` finds it.
	RefName string
}

// Written is what Build wrote: the digests that identify the image.
type Written struct {
	Manifest digest.Digest // the image's identity: what a registry or `podman inspect` calls its digest
	Config   digest.Digest
	Layer    digest.Digest // compressed layer
	DiffID   digest.Digest // uncompressed layer
	Size     int64         // compressed layer bytes
}

// Build writes img as an OCI image layout into dir (created if missing; must hold no layout yet).
func Build(dir string, img Image) (Written, error) {
	var w Written
	if img.Arch == "" {
		return w, errors.New("ociimage: no architecture")
	}
	if img.RefName == "" {
		return w, errors.New("ociimage: no ref name (a tag such as latest)")
	}
	created := img.Created.UTC().Truncate(time.Second)
	layerTar, err := layer(img.Files, created)
	if err != nil {
		return w, err
	}
	var gz bytes.Buffer
	zw, err := gzip.NewWriterLevel(&gz, gzip.DefaultCompression)
	if err != nil {
		return w, err
	}
	// The gzip header's name, comment and modification time stay empty: same bytes in, same out.
	if _, err := zw.Write(layerTar); err != nil {
		return w, err
	}
	if err := zw.Close(); err != nil {
		return w, err
	}
	w.DiffID = digest.FromBytes(layerTar)
	w.Layer = digest.FromBytes(gz.Bytes())
	w.Size = int64(gz.Len())

	config := v1.Image{
		Created:  &created,
		Platform: v1.Platform{Architecture: img.Arch, OS: "linux"},
		Config:   img.Config,
		RootFS:   v1.RootFS{Type: "layers", DiffIDs: []digest.Digest{w.DiffID}},
		History:  []v1.History{{Created: &created, CreatedBy: "krypton ociimage", Comment: "the krypton binary, its C library, CA certificates and the krypton user"}},
	}
	configJSON, err := json.Marshal(config)
	if err != nil {
		return w, err
	}
	w.Config = digest.FromBytes(configJSON)
	manifest := v1.Manifest{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: v1.MediaTypeImageManifest,
		Config:    v1.Descriptor{MediaType: v1.MediaTypeImageConfig, Digest: w.Config, Size: int64(len(configJSON))},
		Layers:    []v1.Descriptor{{MediaType: v1.MediaTypeImageLayerGzip, Digest: w.Layer, Size: w.Size}},
	}
	manifestJSON, err := json.Marshal(manifest)
	if err != nil {
		return w, err
	}
	w.Manifest = digest.FromBytes(manifestJSON)
	index := v1.Index{
		Versioned: specs.Versioned{SchemaVersion: 2},
		MediaType: v1.MediaTypeImageIndex,
		Manifests: []v1.Descriptor{{
			MediaType:   v1.MediaTypeImageManifest,
			Digest:      w.Manifest,
			Size:        int64(len(manifestJSON)),
			Platform:    &v1.Platform{Architecture: img.Arch, OS: "linux"},
			Annotations: map[string]string{v1.AnnotationRefName: img.RefName},
		}},
	}
	indexJSON, err := json.Marshal(index)
	if err != nil {
		return w, err
	}
	layoutJSON, err := json.Marshal(v1.ImageLayout{Version: v1.ImageLayoutVersion})
	if err != nil {
		return w, err
	}

	if _, err := os.Stat(filepath.Join(dir, v1.ImageLayoutFile)); err == nil {
		return w, fmt.Errorf("ociimage: %s already holds an image layout: remove it or choose another directory", dir)
	}
	blobs := filepath.Join(dir, v1.ImageBlobsDir, "sha256")
	if err := os.MkdirAll(blobs, 0o755); err != nil {
		return w, err
	}
	for _, b := range []struct {
		d    digest.Digest
		data []byte
	}{{w.Layer, gz.Bytes()}, {w.Config, configJSON}, {w.Manifest, manifestJSON}} {
		if err := os.WriteFile(filepath.Join(blobs, b.d.Encoded()), b.data, 0o644); err != nil {
			return w, err
		}
	}
	if err := os.WriteFile(filepath.Join(dir, v1.ImageLayoutFile), layoutJSON, 0o644); err != nil {
		return w, err
	}
	if err := os.WriteFile(filepath.Join(dir, v1.ImageIndexFile), indexJSON, 0o644); err != nil {
		return w, err
	}
	return w, nil
}

// layer returns the uncompressed tar of files, with every parent directory made explicit (root
// owned, 0755, unless listed), sorted by path.
func layer(files []File, mtime time.Time) ([]byte, error) {
	byPath := map[string]File{}
	for _, f := range files {
		p := path.Clean(f.Path)
		if !path.IsAbs(p) || p == "/" {
			return nil, fmt.Errorf("ociimage: %q: want an absolute path below /", f.Path)
		}
		if _, dup := byPath[p]; dup {
			return nil, fmt.Errorf("ociimage: %s listed twice", p)
		}
		f.Path = p
		byPath[p] = f
	}
	for p := range byPath {
		for d := path.Dir(p); d != "/"; d = path.Dir(d) {
			if _, ok := byPath[d]; !ok {
				byPath[d] = File{Path: d, Mode: fs.ModeDir | 0o755}
			}
		}
	}
	paths := make([]string, 0, len(byPath))
	for p := range byPath {
		paths = append(paths, p)
	}
	sort.Strings(paths)

	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, p := range paths {
		f := byPath[p]
		h := &tar.Header{
			Name:    strings.TrimPrefix(p, "/"),
			Uid:     f.UID,
			Gid:     f.GID,
			ModTime: mtime,
			Format:  tar.FormatUSTAR,
		}
		h.Mode = int64(f.Mode.Perm())
		if f.Mode&fs.ModeSticky != 0 {
			h.Mode |= 0o1000
		}
		switch {
		case f.Mode.IsDir():
			h.Typeflag = tar.TypeDir
			h.Name += "/"
		case f.Mode&fs.ModeSymlink != 0:
			h.Typeflag = tar.TypeSymlink
			h.Linkname = f.Link
		case f.Mode.IsRegular():
			h.Typeflag = tar.TypeReg
			h.Size = int64(len(f.Data))
		default:
			return nil, fmt.Errorf("ociimage: %s: unsupported file mode %v", p, f.Mode)
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, fmt.Errorf("ociimage: %s: %w", p, err)
		}
		if h.Typeflag == tar.TypeReg {
			if _, err := tw.Write(f.Data); err != nil {
				return nil, err
			}
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}
