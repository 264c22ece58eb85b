#!/usr/bin/env bash
# Runs `krypton bench -elections` for several builds or Raft timings at the same time, beside CPU
# hogs, so that whatever else the machine is doing hits them all alike (docs/performance.md,
# "Leadership under CPU starvation").
#
#   scripts/elections-side-by-side.sh OUTDIR DURATION HOGS 'BIN [FLAGS...]' ['BIN [FLAGS...]' ...]
#
# e.g. scripts/elections-side-by-side.sh /tmp/el 10m 4 'old/krypton' 'bin/krypton' \
#        'bin/krypton -raft-heartbeat-timeout 1s -raft-election-timeout 1s -raft-leader-lease-timeout 500ms'
# Each run writes OUTDIR/N.txt and OUTDIR/N.json. The hogs are HOGS busy cores in one process
# (`krypton bench -cpu-hog` of the first binary) for the whole run.
set -euo pipefail
if [ $# -lt 4 ]; then
  sed -n '2,11p' "$0" >&2
  exit 2
fi
out=$1 dur=$2 hogs=$3
shift 3
mkdir -p "$out"
first=($1)
if [ "$hogs" -gt 0 ]; then
  # The hogs read their stdin from fd 3 of this script: it closes when the script ends, however
  # it ends, and they exit then (or after DURATION in any case).
  exec 3> >(GOMAXPROCS=$hogs "${first[0]}" bench -cpu-hog "$dur" -hogs "$hogs")
fi
n=0
pids=()
for run in "$@"; do
  n=$((n + 1))
  words=($run)
  echo "$n: $run" >"$out/$n.txt"
  "${words[0]}" bench -elections -duration "$dur" "${words[@]:1}" -out "$out/$n.json" >>"$out/$n.txt" 2>&1 &
  pids+=($!)
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=1; done
exec 3>&- 2>/dev/null || true
for i in $(seq 1 $n); do cat "$out/$i.txt"; echo; done
exit $status
