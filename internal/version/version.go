// Package version holds the build's version and commit, set at link time by the Makefile
// (-ldflags -X) and read by `krypton version`, the metrics endpoint and the logs.
package version

import (
	"fmt"
	"runtime"
	"runtime/debug"

	"github.com/kryptonkms/krypton/internal/fipsmode"
)

// Version and Commit are overridden at link time; the defaults mark an unreleased build.
var (
	Version = "dev"
	Commit  = "unknown"
)

// String is the one-line form printed by `krypton version`.
func String() string {
	commit := Commit
	if commit == "unknown" {
		// `go build` without the Makefile: fall back to what the toolchain recorded, if anything.
		if info, ok := debug.ReadBuildInfo(); ok {
			for _, s := range info.Settings {
				if s.Key == "vcs.revision" && len(s.Value) >= 7 {
					commit = s.Value[:7]
				}
			}
		}
	}
	// The FIPS 140-3 mode and module version (docs/security.md): "fips140=off" in a normal
	// build and run.
	return fmt.Sprintf("krypton %s (commit %s, %s, %s/%s, %s)", Version, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH, fipsmode.Describe())
}
