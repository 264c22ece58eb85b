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

# A test binary that dies outside a test (killed by -timeout, a panic in a goroutine after its test
# ended, a leak check in TestMain, a race report after the tests) prints why as output of the
# package, not of a test, and gotestsum shows only tests' output: such a package is listed as
# "=== FAIL: pkg (0.00s)" and nothing more. Print that package-level output here (its last 400
# lines), so that the log names the cause. (python3 reads test2json's records; it is on every CI
# machine.)
if [[ $rc -ne 0 ]]; then
	python3 - "$jsonlog" <<'PY' >&2
import collections, json, sys
out = collections.defaultdict(list)   # package -> its output outside any test
every = collections.defaultdict(list) # package -> all its output (test2json may give a timeout's dump to the test that hung)
failed_tests = set()                  # packages with a failed test: gotestsum shows those
failed_pkgs = []
for raw in open(sys.argv[1], encoding="utf-8", errors="replace"):
    try:
        ev = json.loads(raw)
    except ValueError:
        continue
    pkg, test, action = ev.get("Package", ""), ev.get("Test"), ev.get("Action")
    if action == "output":
        every[pkg].append(ev.get("Output") or "")
        if not test:
            out[pkg].append(ev.get("Output") or "")
    elif action == "fail" and test:
        failed_tests.add(pkg)
    elif action == "fail" and not test:
        failed_pkgs.append(pkg)
for pkg in failed_pkgs:
    # A timeout's dump starts with the tests still running and the stacks that matter most: keep
    # its head. gotestsum shows none of it, whichever test test2json gives it to.
    lines = every.get(pkg, [])
    start = next((i for i, l in enumerate(lines) if "panic: test timed out" in l), None)
    if start is not None:
        print(f"gotest: {pkg} timed out; its output from the timeout on (first 400 lines):")
        sys.stdout.write("".join(lines[start:start + 400]))
        print(f"gotest: end of {pkg}")
        continue
    if pkg in failed_tests:
        continue  # gotestsum shows the failed tests' output
    # Any other cause (a leak report, a panic after the tests, a race) ends the output: keep the tail.
    lines = [l for l in out.get(pkg, []) if not l.startswith(("=== RUN", "=== PAUSE", "=== CONT", "PASS\n", "FAIL\n", "ok ", "FAIL\t"))]
    print(f"gotest: {pkg} failed outside its tests; its own output (last 400 lines):")
    sys.stdout.write("".join(lines[-400:]))
    print(f"gotest: end of {pkg}")
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
