#!/usr/bin/env bash
# gotest.sh runs every test of the module with the race detector through gotestsum and ends with
# one summary line of its own:
#
#   tests: 1234 passed, 0 failed, 12 skipped
#
#   bash scripts/gotest.sh            all packages, then the chaos suite (jepsen/) on its own (make test)
#   bash scripts/gotest.sh ./wrap/... only the packages named (jepsen/ too, if they include it)
#
# Why gotestsum rather than a bare `go test`: in a failed run `go test` prints the whole output of
# every failed package, so the one failing test is buried in its neighbours' logs; gotestsum prints
# only the output of failed tests, lists their names again at the end, and counts. It is installed
# into ./.bin at the pinned version (as scripts/genproto.sh does for protoc's plugins), nothing
# global, and it is not a dependency of the module.
#
# KRYPTON_TEST_SUMMARY=FILE also writes the summary line to FILE, so that .ci/run can print it last.
# GOTEST_FLAGS adds flags to both `go test` runs (for example GOTEST_FLAGS='-run TestScripts').
set -euo pipefail

# --- Pinned tool version: change it here, and only here. ---
GOTESTSUM_VERSION="v1.13.0"
# ------------------------------------------------------------

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
GO="${GO:-go}"

bin="$root/.bin"
mkdir -p "$bin"
if [[ ! -x "$bin/gotestsum" ]] || [[ "$("$bin/gotestsum" --version 2>/dev/null)" != "gotestsum version ${GOTESTSUM_VERSION}" ]]; then
	echo "gotest: installing gotest.tools/gotestsum@${GOTESTSUM_VERSION} into .bin" >&2
	GOBIN="$bin" GOFLAGS="-trimpath" GOWORK=off "$GO" install "gotest.tools/gotestsum@${GOTESTSUM_VERSION}"
fi

# The chaos suite's short schedule runs on its own after the rest: its three krypton processes and
# its clients keep both cores busy, and the other packages' Raft clusters run on short test timeouts.
mapfile -t all < <("$GO" list "${@:-./...}")
pkgs=() jepsen=()
for p in "${all[@]}"; do
	if [[ "$p" == */jepsen ]]; then jepsen=("$p"); else pkgs+=("$p"); fi
done
flags=(-race -count=1 -timeout 20m)
read -r -a extra <<<"${GOTEST_FLAGS:-}"

summary="$(mktemp)" jsonlog="$(mktemp)"
trap 'rm -f "$summary" "$jsonlog"' EXIT
# The post-run command gets the counts in its environment. A package that does not build, or whose
# test binary dies outside a test, is an error in gotestsum's words: it counts as a failure here.
post='bash -c '\''echo "tests: $((TESTS_TOTAL - TESTS_FAILED - TESTS_SKIPPED)) passed, $((TESTS_FAILED + TESTS_ERRORS)) failed, $TESTS_SKIPPED skipped" >"$0"'\'' '"$summary"

rc=0
"$bin/gotestsum" --format pkgname-and-test-fails --format-hide-empty-pkg --hide-summary=output \
	--jsonfile "$jsonlog" --post-run-command "$post" --raw-command -- bash -c '
		rc=0 n=$1 j=$2
		shift 2
		if [[ $# -gt $n+$j ]]; then "$0" test -json "${@:1:$n}" "${@:$n+$j+1}" || rc=$?; fi
		if [[ $j -gt 0 ]]; then "$0" test -json "${@:1:$n}" "${@:$n+1:$j}" || rc=$?; fi
		exit $rc' "$GO" "$((${#flags[@]} + ${#extra[@]}))" "${#jepsen[@]}" \
	"${flags[@]}" "${extra[@]}" "${jepsen[@]}" "${pkgs[@]}" || rc=$?

# A test binary killed by -timeout prints the panic and every goroutine's stack as output of the
# package, not of a test, and gotestsum shows only tests' output: print that part here, so that a
# hang names where it hung. (python3 reads test2json's records; it is on every CI machine.)
if [[ $rc -ne 0 ]] && grep -q 'panic: test timed out' "$jsonlog"; then
	echo "gotest: a test binary timed out; its stacks follow (first 2000 lines)" >&2
	python3 - "$jsonlog" <<'PY' | head -400 >&2
import json, sys
show = False
for raw in open(sys.argv[1], encoding="utf-8", errors="replace"):
    try:
        ev = json.loads(raw)
    except ValueError:
        continue
    out = ev.get("Output") or ""
    if "panic: test timed out" in out:
        show = True
    if show and ev.get("Action") == "output":
        sys.stdout.write(out)
    if show and ev.get("Action") in ("fail", "pass") and not ev.get("Test"):
        show = False
PY
fi

line="$(cat "$summary" 2>/dev/null || true)"
if [[ -z "$line" ]]; then
	echo "gotest: gotestsum ended without counting the tests (exit $rc); see above" >&2
	exit $((rc == 0 ? 1 : rc))
fi
echo "$line"
if [[ -n "${KRYPTON_TEST_SUMMARY:-}" ]]; then
	echo "$line" >"$KRYPTON_TEST_SUMMARY"
fi
exit $rc
