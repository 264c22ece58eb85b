package ociimage

import (
	"debug/elf"
	"fmt"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"strings"

	v1 "github.com/opencontainers/image-spec/specs-go/v1"
)

// User is the image's unprivileged user and group (65532, the "nonroot" id distroless images use,
// so that volume ownership carries over between the two).
const (
	User    = 65532
	Binary  = "/usr/local/bin/krypton"
	DataDir = "/var/lib/krypton"
)

// KryptonOptions are the inputs of the Krypton image besides the binary.
type KryptonOptions struct {
	Binary   string // path of the built krypton binary (cgo: the PKCS#11 anchor loads modules with dlopen)
	CABundle string // PEM bundle of the public CAs, for the cloud KMS and OIDC endpoints: /etc/ssl/certs/ca-certificates.crt
	Version  string // org.opencontainers.image.version
	Revision string // org.opencontainers.image.revision
	// LibDirs are where the binary's shared libraries are looked up (the host's multiarch
	// directories); empty: the usual Debian ones.
	LibDirs []string
}

// KryptonFiles returns the root filesystem of the Krypton image: the binary, its ELF interpreter
// and the shared libraries it names (the C library: the binary is built with cgo so that the
// PKCS#11 anchor can load an HSM's module), the CA bundle, /etc/passwd and /etc/group naming root
// and the krypton user, an empty data directory owned by that user, and /tmp. No shell, no
// package manager: nothing else.
func KryptonFiles(o KryptonOptions) ([]File, error) {
	bin, err := os.ReadFile(o.Binary)
	if err != nil {
		return nil, err
	}
	ca, err := os.ReadFile(o.CABundle)
	if err != nil {
		return nil, fmt.Errorf("CA bundle: %w (Debian package ca-certificates)", err)
	}
	files := []File{
		{Path: Binary, Mode: 0o755, Data: bin},
		{Path: "/etc/ssl/certs/ca-certificates.crt", Mode: 0o644, Data: ca},
		{Path: "/etc/passwd", Mode: 0o644, Data: []byte(fmt.Sprintf(
			"root:x:0:0:root:/root:/sbin/nologin\nkrypton:x:%d:%d:krypton:%s:/sbin/nologin\n", User, User, DataDir))},
		{Path: "/etc/group", Mode: 0o644, Data: []byte(fmt.Sprintf("root:x:0:\nkrypton:x:%d:\n", User))},
		{Path: DataDir, Mode: fs.ModeDir | 0o700, UID: User, GID: User},
		{Path: "/etc/krypton", Mode: fs.ModeDir | 0o755},
		{Path: "/tmp", Mode: fs.ModeDir | fs.ModeSticky | 0o777},
	}
	libs, err := sharedLibraries(o.Binary, o.LibDirs)
	if err != nil {
		return nil, err
	}
	return append(files, libs...), nil
}

// KryptonConfig is the image configuration: the krypton user, the binary as entrypoint (no shell
// to run it through), `version` as the default command, the ports of docs/operations.md.
func KryptonConfig(o KryptonOptions) v1.ImageConfig {
	return v1.ImageConfig{
		User:       fmt.Sprintf("%d:%d", User, User),
		Entrypoint: []string{Binary},
		Cmd:        []string{"version"},
		WorkingDir: DataDir,
		Env:        []string{"PATH=/usr/local/bin"},
		ExposedPorts: map[string]struct{}{
			"7400/tcp": {}, "7410/tcp": {}, "7420/tcp": {}, "7420/udp": {}, // region node: API, Raft, gossip
			"7500/tcp": {}, "7510/tcp": {}, "7520/tcp": {}, "7520/udp": {}, // governance node
			"7600/tcp": {}, "5696/tcp": {}, // gateway: gRPC, KMIP
		},
		Volumes: map[string]struct{}{DataDir: {}},
		Labels: map[string]string{
			v1.AnnotationTitle:       "krypton",
			v1.AnnotationDescription: "Krypton key-wrapping service: region node, governance node and gateway",
			v1.AnnotationSource:      "https://github.com/kryptonkms/krypton",
			v1.AnnotationVersion:     o.Version,
			v1.AnnotationRevision:    o.Revision,
		},
		StopSignal: "SIGTERM",
	}
}

// sharedLibraries returns the ELF interpreter and the DT_NEEDED libraries of the binary (and of
// those, transitively), read from the host at the paths the dynamic loader finds them, each stored
// at that path with symlinks resolved. A static binary returns none.
func sharedLibraries(binary string, dirs []string) ([]File, error) {
	if len(dirs) == 0 {
		dirs = []string{"/lib/x86_64-linux-gnu", "/usr/lib/x86_64-linux-gnu", "/lib/aarch64-linux-gnu", "/usr/lib/aarch64-linux-gnu", "/lib64", "/lib", "/usr/lib"}
	}
	f, err := elf.Open(binary)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", binary, err)
	}
	defer f.Close()
	var out []File
	seen := map[string]bool{}
	for _, p := range f.Progs {
		if p.Type != elf.PT_INTERP {
			continue
		}
		b := make([]byte, p.Filesz)
		if _, err := p.ReadAt(b, 0); err != nil {
			return nil, err
		}
		interp := strings.TrimRight(string(b), "\x00")
		lf, err := hostFile(interp)
		if err != nil {
			return nil, err
		}
		out = append(out, lf)
		seen[path.Base(interp)] = true
	}
	queue, err := f.ImportedLibraries()
	if err != nil {
		return nil, err
	}
	for len(queue) > 0 {
		name := queue[0]
		queue = queue[1:]
		if seen[name] {
			continue
		}
		seen[name] = true
		found := ""
		for _, d := range dirs {
			if _, err := os.Stat(filepath.Join(d, name)); err == nil {
				found = path.Join(d, name)
				break
			}
		}
		if found == "" {
			return nil, fmt.Errorf("%s needs %s, found in none of %s", binary, name, strings.Join(dirs, ", "))
		}
		lf, err := hostFile(found)
		if err != nil {
			return nil, err
		}
		out = append(out, lf)
		lib, err := elf.Open(found)
		if err != nil {
			return nil, err
		}
		more, err := lib.ImportedLibraries()
		lib.Close()
		if err != nil {
			return nil, err
		}
		queue = append(queue, more...)
	}
	return out, nil
}

func hostFile(p string) (File, error) {
	real, err := filepath.EvalSymlinks(p)
	if err != nil {
		return File{}, err
	}
	data, err := os.ReadFile(real)
	if err != nil {
		return File{}, err
	}
	return File{Path: p, Mode: 0o755, Data: data}, nil
}
