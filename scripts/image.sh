#!/usr/bin/env bash
# image.sh builds Krypton's OCI image with no container engine and no registry: it builds the binary
# (cgo, as `make build` does: the PKCS#11 anchor loads HSM modules with dlopen) and writes an OCI
# image layout from it, the host's C library and CA bundle (deploy/image, internal/ociimage).
#
#   bash scripts/image.sh [OUT]     the layout in OUT (default bin/image), tagged with the version
#
# Reproducible: every file carries SOURCE_DATE_EPOCH (default: the last commit's time), so the same
# commit, Go toolchain, C library and CA bundle give the same digest. Copy or run it with
# `skopeo copy oci:bin/image:TAG docker://REGISTRY/krypton:TAG`, `podman run oci:bin/image:TAG`, or
# unpack it with `umoci unpack --image bin/image:TAG bundle`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
GO="${GO:-go}"
out="${1:-bin/image}"
version="${VERSION:-$(git describe --tags --dirty 2>/dev/null || echo 0.1.0-dev)}"
commit="${COMMIT:-$(git rev-parse --short HEAD 2>/dev/null || echo unknown)}"
export SOURCE_DATE_EPOCH="${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || echo 0)}"
# A tag may not hold '+'; the version may (a dirty tree's).
tag="${version//+/-}"

mkdir -p bin
CGO_ENABLED=1 "$GO" build -trimpath \
	-ldflags "-X github.com/kryptonkms/krypton/internal/version.Version=${version} -X github.com/kryptonkms/krypton/internal/version.Commit=${commit}" \
	-o bin/krypton-image ./cmd/krypton
rm -rf "$out"
"$GO" run ./deploy/image -binary bin/krypton-image -out "$out" -tag "$tag" -version "$version" -revision "$commit"
