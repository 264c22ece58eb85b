#!/usr/bin/env bash
# genproto.sh regenerates the Go code of the gRPC API (package krypton.v1)
# from proto/ into transport/kryptonv1/.
#
#   bash scripts/genproto.sh           regenerate in place (make proto)
#   bash scripts/genproto.sh --check   regenerate into a temporary directory and
#                                      fail, printing the diff, if the committed
#                                      code differs (CI)
#
# The generated files name the protoc and plugin versions in their headers, so
# the output is deterministic only with exactly the versions pinned below. The
# plugins are installed with `go install` into ./.bin (GOBIN), nothing global;
# protoc is Debian's protobuf-compiler package (bookworm ships 3.21.12), or
# the binary named by $PROTOC.
set -euo pipefail

# --- Pinned tool versions: change them here, and only here. ---
# protoc-gen-go is part of google.golang.org/protobuf: keep it equal to the
# version go.mod requires.
PROTOC_VERSION="3.21.12"
PROTOC_GEN_GO_VERSION="v1.36.12"
# protoc-gen-go-grpc 1.6.x emits code for grpc.SupportPackageIsVersion9
# (grpc-go >= 1.64); v1.6.2 is the newest release, compatible with grpc v1.85.0.
PROTOC_GEN_GO_GRPC_VERSION="v1.6.2"
# ---------------------------------------------------------------

GO_MODULE="github.com/kryptonkms/krypton"
OUT_PKG_DIR="transport/kryptonv1"

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

mode="generate"
case "${1:-}" in
"") ;;
--check) mode="check" ;;
-h | --help)
	sed -n '2,14p' "$0" | sed 's/^# \{0,1\}//'
	exit 0
	;;
*)
	echo "genproto: unknown argument ${1}; usage: genproto.sh [--check]" >&2
	exit 2
	;;
esac

die() {
	echo "genproto: $*" >&2
	exit 1
}

# protoc: must be the pinned version, because its version is written into
# every generated file.
PROTOC="${PROTOC:-protoc}"
command -v "$PROTOC" >/dev/null 2>&1 ||
	die "protoc not found; install it with: apt-get install -y protobuf-compiler (want ${PROTOC_VERSION})"
have="$("$PROTOC" --version 2>/dev/null | head -n 1)" || true
have="${have#libprotoc }"
[[ "$have" == "$PROTOC_VERSION" ]] ||
	die "protoc is ${have}, want ${PROTOC_VERSION} (Debian bookworm's protobuf-compiler); set PROTOC to a ${PROTOC_VERSION} binary"

# The well-known types (google/protobuf/*.proto) that ship with protoc.
wkt_include=""
for dir in "$(dirname "$(command -v "$PROTOC")")/../include" /usr/include /usr/local/include; do
	if [[ -f "$dir/google/protobuf/timestamp.proto" ]]; then
		wkt_include="$(cd "$dir" && pwd)"
		break
	fi
done
[[ -n "$wkt_include" ]] || die "google/protobuf/timestamp.proto not found next to protoc (install protobuf-compiler, or libprotobuf-dev)"

# Plugins: installed into ./.bin at the pinned versions, reinstalled when the
# version there is another one.
bin="$root/.bin"
mkdir -p "$bin"
install_plugin() { # name package version want-version-output
	local name="$1" pkg="$2" version="$3" want="$4"
	if [[ ! -x "$bin/$name" ]] || [[ "$("$bin/$name" --version 2>/dev/null)" != "$want" ]]; then
		echo "genproto: installing ${pkg}@${version} into .bin" >&2
		GOBIN="$bin" GOFLAGS="-trimpath" GOWORK=off go install "${pkg}@${version}"
	fi
	[[ "$("$bin/$name" --version)" == "$want" ]] || die "$bin/$name is not ${version}"
}
install_plugin protoc-gen-go google.golang.org/protobuf/cmd/protoc-gen-go \
	"$PROTOC_GEN_GO_VERSION" "protoc-gen-go ${PROTOC_GEN_GO_VERSION}"
install_plugin protoc-gen-go-grpc google.golang.org/grpc/cmd/protoc-gen-go-grpc \
	"$PROTOC_GEN_GO_GRPC_VERSION" "protoc-gen-go-grpc ${PROTOC_GEN_GO_GRPC_VERSION#v}"

# Sources, in a fixed order so that the output never depends on the file
# system.
mapfile -t protos < <(cd proto && find krypton -name '*.proto' -type f | LC_ALL=C sort)
[[ ${#protos[@]} -gt 0 ]] || die "no .proto files under proto/krypton"

# generate DIR writes the generated Go code under DIR/$OUT_PKG_DIR.
generate() {
	local out="$1"
	mkdir -p "$out"
	(cd proto && "$PROTOC" \
		--fatal_warnings \
		-I . -I "$wkt_include" \
		--plugin=protoc-gen-go="$bin/protoc-gen-go" \
		--plugin=protoc-gen-go-grpc="$bin/protoc-gen-go-grpc" \
		--go_out="$out" --go_opt=module="$GO_MODULE" \
		--go-grpc_out="$out" --go-grpc_opt=module="$GO_MODULE" \
		"${protos[@]}")
}

tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
generate "$tmp"

# Only *.pb.go files are generated; everything else in the package directory
# (doc.go, tests, helpers) is written by hand and left alone.
generated_list() { # dir
	(cd "$1" 2>/dev/null && find . -maxdepth 1 -name '*.pb.go' -type f | LC_ALL=C sort) || true
}

if [[ "$mode" == "check" ]]; then
	mkdir -p "$tmp/committed"
	while read -r f; do
		cp "$OUT_PKG_DIR/$f" "$tmp/committed/$f"
	done < <(generated_list "$OUT_PKG_DIR")
	if ! diff -ruN "$tmp/committed" "$tmp/$OUT_PKG_DIR" >"$tmp/diff"; then
		sed -e "s#$tmp/committed#committed#g" -e "s#$tmp/$OUT_PKG_DIR#regenerated#g" "$tmp/diff"
		echo "genproto: generated code in $OUT_PKG_DIR is stale; run: make proto (bash scripts/genproto.sh)" >&2
		exit 1
	fi
	echo "genproto: $OUT_PKG_DIR is up to date" >&2
	exit 0
fi

mkdir -p "$OUT_PKG_DIR"
# Remove generated files whose .proto is gone, then move the new ones in.
while read -r f; do
	[[ -f "$tmp/$OUT_PKG_DIR/$f" ]] || rm -f "$OUT_PKG_DIR/$f"
done < <(generated_list "$OUT_PKG_DIR")
while read -r f; do
	cp "$tmp/$OUT_PKG_DIR/$f" "$OUT_PKG_DIR/$f"
done < <(generated_list "$tmp/$OUT_PKG_DIR")
echo "genproto: regenerated $OUT_PKG_DIR" >&2
