#!/usr/bin/env bash
# Disaster-recovery drill: a whole region is rebuilt from a snapshot file on new machines (fresh
# data directories, new node ids), and every revocation in the file is still in force
# (docs/operations.md, "Rebuilding a region from a snapshot").
#
#   scripts/dr-restore-region.sh WORKDIR
#
# Run by cmd/krypton.TestDRScripts.
if [ $# -ne 1 ]; then
  sed -n '2,8p' "$0" >&2
  exit 2
fi
. "$(dirname "$0")/dr-lib.sh"
setup "$1"
say "the old region: a1, a2, a3"
for id in a1 a2 a3; do ports "$id"; done
for id in a1 a2 a3; do start "$id" 3 "${GOSSIP[a1]},${GOSSIP[a2]},${GOSSIP[a3]}"; done
for id in a1 a2 a3; do serving "$id"; done
workload a1
op a1 snapshot save backup.snap

say "every machine of the old region is lost"
for id in a1 a2 a3; do kill9 "$id"; done
rm -rf a1 a2 a3

say "a new region of the same name on new machines: b1, b2, b3, then the restore"
for id in b1 b2 b3; do ports "$id"; done
for id in b1 b2 b3; do start "$id" 3 "${GOSSIP[b1]},${GOSSIP[b2]},${GOSSIP[b3]}"; done
for id in b1 b2 b3; do serving "$id"; done
op b1 snapshot restore backup.snap
for id in b1 b2 b3; do serving "$id"; done
check b1
retry check b2
retry check b3
say "rebuilt: the region's tenants, keys and revocations are back on b1, b2, b3"
