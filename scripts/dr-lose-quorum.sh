#!/usr/bin/env bash
# Disaster-recovery drill: a region of three loses two nodes for good, and the survivor is made a
# one-node region (`krypton operator raft recover`) that two new, empty nodes then join
# (docs/operations.md, "A region lost its quorum"). Each step is the runbook's command.
#
#   scripts/dr-lose-quorum.sh WORKDIR
#
# Run by cmd/krypton.TestDRScripts.
if [ $# -ne 1 ]; then
  sed -n '2,8p' "$0" >&2
  exit 2
fi
. "$(dirname "$0")/dr-lib.sh"
setup "$1"
for id in n1 n2 n3; do ports "$id"; done
say "a region of n1, n2, n3"
for id in n1 n2 n3; do start "$id" 3 "${GOSSIP[n1]},${GOSSIP[n2]},${GOSSIP[n3]}"; done
for id in n1 n2 n3; do serving "$id"; done
workload n1

say "n2 and n3 are lost for good: the region has no quorum"
kill9 n2
kill9 n3
rm -rf n2 n3
# The survivor cannot write: a write needs a quorum.
if op n1 key rotate -timeout 3s t1 s1 >/dev/null 2>&1; then
  echo "a write was acknowledged without a quorum" >&2
  exit 1
fi

say "recover: stop n1, make it the only voter, start it"
stop n1
"$KRYPTON" operator raft recover -data-dir n1 -node-id n1 -raft-addr "${RAFT[n1]}" -region "$REGION"
start n1 0 ""
serving n1
check n1

say "two new nodes, n4 and n5, started empty and joined"
for id in n4 n5; do
  start "$id" 0 "${GOSSIP[n1]}"
  retry op n1 join "$id" "${RAFT[$id]}"
done
for id in n4 n5; do serving "$id"; done
op n1 operator raft list-peers
retry check n4
retry check n5
say "the recovered region has a quorum of its own: n1 stops, n4 and n5 go on"
stop n1
serving n4
retry check n4
say "recovered: a region of n1, n4, n5"
