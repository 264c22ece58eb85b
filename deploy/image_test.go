package deploy

import (
	"archive/tar"
	"compress/gzip"
	"encoding/json"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	v1 "github.com/opencontainers/image-spec/specs-go/v1"

	"github.com/kryptonkms/krypton/internal/ociimage"
)

// buildImage builds the Krypton image of bin into dir as scripts/image.sh does.
func buildImage(dir string, bin string, created time.Time) (ociimage.Written, error) {
	o := ociimage.KryptonOptions{Binary: bin, CABundle: "/etc/ssl/certs/ca-certificates.crt", Version: "test", Revision: "test"}
	files, err := ociimage.KryptonFiles(o)
	if err != nil {
		return ociimage.Written{}, err
	}
	return ociimage.Build(dir, ociimage.Image{Files: files, Config: ociimage.KryptonConfig(o), Created: created, Arch: runtime.GOARCH, RefName: "test"})
}

func readBlob(t *testing.T, layout string, d interface{ Encoded() string }) []byte {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(layout, "blobs", "sha256", d.Encoded()))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// shell matches a file no image of Krypton needs: a shell or a multi-call binary holding one.
var shell = regexp.MustCompile(`(^|/)(sh|bash|dash|ash|busybox|toybox)$`)

// TestImageReproducible builds the OCI image twice from the same binary and time (as
// scripts/image.sh does) and gets the same digest, and a different one for another time; checks
// its configuration (a numeric non-root user, the binary as entrypoint with no shell in the image)
// and its layer (every entry at SOURCE_DATE_EPOCH, root-owned but for the data directory); then
// unpacks it with umoci, an independent reader of OCI layouts, and runs `krypton version` as the
// image's user from the unpacked root filesystem (chroot).
func TestImageReproducible(t *testing.T) {
	t.Parallel()
	bin := kryptonBinary(t)
	epoch := time.Unix(1767225600, 0) // 2026-01-01
	a, b := t.TempDir(), t.TempDir()
	// The two builds run at once (compressing the layer is most of their time).
	var wb ociimage.Written
	var errB error
	done := make(chan struct{})
	go func() {
		defer close(done)
		wb, errB = buildImage(b, bin, epoch)
	}()
	wa, errA := buildImage(a, bin, epoch)
	<-done
	if errA != nil || errB != nil {
		t.Fatalf("building the image: %v, %v", errA, errB)
	}
	if wa != wb {
		t.Fatalf("two builds of the same inputs differ:\n%+v\n%+v", wa, wb)
	}
	// The time is an input: a small image at two times has two digests, at one time one.
	small := func(at time.Time) ociimage.Written {
		w, err := ociimage.Build(t.TempDir(), ociimage.Image{Files: []ociimage.File{{Path: "/etc/passwd", Mode: 0o644, Data: []byte("root:x:0:0::/:/sbin/nologin\n")}},
			Config: ociimage.KryptonConfig(ociimage.KryptonOptions{}), Created: at, Arch: runtime.GOARCH, RefName: "small"})
		if err != nil {
			t.Fatal(err)
		}
		return w
	}
	if s1, s2, s3 := small(epoch), small(epoch), small(epoch.Add(time.Second)); s1 != s2 || s1.Manifest == s3.Manifest {
		t.Errorf("small image digests %s, %s at one time and %s a second later: want the first two equal, the third different", s1.Manifest, s2.Manifest, s3.Manifest)
	}
	t.Logf("image %s, layer %d bytes compressed", wa.Manifest, wa.Size)

	var cfg v1.Image
	if err := json.Unmarshal(readBlob(t, a, wa.Config), &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg.Config.User != "65532:65532" {
		t.Errorf("User %q, want 65532:65532 (numeric, so that runAsNonRoot can check it)", cfg.Config.User)
	}
	if len(cfg.Config.Entrypoint) != 1 || cfg.Config.Entrypoint[0] != ociimage.Binary {
		t.Errorf("Entrypoint %q, want [%s]", cfg.Config.Entrypoint, ociimage.Binary)
	}
	if cfg.Created == nil || !cfg.Created.Equal(epoch) {
		t.Errorf("Created %v, want %v", cfg.Created, epoch)
	}
	containerfile, err := os.ReadFile("../Containerfile")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{"USER " + cfg.Config.User, `ENTRYPOINT ["` + ociimage.Binary + `"]`, "WORKDIR " + cfg.Config.WorkingDir} {
		if !strings.Contains(string(containerfile), "\n"+line+"\n") {
			t.Errorf("Containerfile lacks %q, which the image scripts/image.sh builds has", line)
		}
	}

	zr, err := gzip.NewReader(strings.NewReader(string(readBlob(t, a, wa.Layer))))
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(zr)
	names := map[string]bool{}
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
		names[strings.TrimSuffix(h.Name, "/")] = true
		if shell.MatchString(strings.TrimSuffix(h.Name, "/")) {
			t.Errorf("the image holds %s: it needs no shell", h.Name)
		}
		if !h.ModTime.Equal(epoch) || h.Uname != "" || h.Gname != "" {
			t.Errorf("%s: time %v, owner names %q %q: want %v and none", h.Name, h.ModTime, h.Uname, h.Gname, epoch)
		}
		wantOwner := 0
		if strings.TrimSuffix(h.Name, "/") == strings.TrimPrefix(ociimage.DataDir, "/") {
			wantOwner = ociimage.User
		}
		if h.Uid != wantOwner || h.Gid != wantOwner {
			t.Errorf("%s: owner %d:%d, want %d:%d", h.Name, h.Uid, h.Gid, wantOwner, wantOwner)
		}
	}
	for _, n := range []string{"usr/local/bin/krypton", "etc/ssl/certs/ca-certificates.crt", "etc/passwd", "etc/group", "var/lib/krypton", "tmp"} {
		if !names[n] {
			t.Errorf("the image lacks %s", n)
		}
	}

	umoci := requireTool(t, "umoci", "umoci")
	bundle := filepath.Join(t.TempDir(), "bundle")
	unpack := []string{"unpack", "--image", a + ":test", bundle}
	run := []string{"chroot", "--userspec=65532:65532", filepath.Join(bundle, "rootfs"), ociimage.Binary, "version"}
	if os.Geteuid() != 0 {
		// Unprivileged: umoci's rootless mode, and chroot in a user namespace of our own.
		unpack = []string{"unpack", "--rootless", "--image", a + ":test", bundle}
		run = append([]string{"unshare", "--user", "--map-root-user"}, run[0], filepath.Join(bundle, "rootfs"), ociimage.Binary, "version")
	}
	if out, err := exec.Command(umoci, unpack...).CombinedOutput(); err != nil {
		t.Fatalf("umoci %s: %v\n%s", strings.Join(unpack, " "), err, out)
	}
	if os.Geteuid() == 0 {
		st, err := os.Stat(filepath.Join(bundle, "rootfs", ociimage.DataDir))
		if err != nil {
			t.Fatal(err)
		}
		if sys := st.Sys().(*syscall.Stat_t); sys.Uid != ociimage.User || st.Mode().Perm() != 0o700 {
			t.Errorf("unpacked %s: owner %d mode %v, want %d and 0700", ociimage.DataDir, sys.Uid, st.Mode().Perm(), ociimage.User)
		}
	}
	out, err := exec.Command(run[0], run[1:]...).CombinedOutput()
	if err != nil || !strings.HasPrefix(string(out), "krypton ") {
		t.Fatalf("%s: %v\n%s", strings.Join(run, " "), err, out)
	}
	t.Logf("from the unpacked image: %s", strings.TrimSpace(string(out)))
}
