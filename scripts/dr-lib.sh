# Shared by the disaster-recovery drills (scripts/dr-lose-quorum.sh, scripts/dr-restore-region.sh;
# docs/operations.md, "Disaster recovery"): a throw-away region of real `krypton server` processes
# on 127.0.0.1, under one work directory. Sourced, not run. Needs `krypton` on PATH (or $KRYPTON).
# DR_PORTS may list free TCP/UDP ports (the Go test that runs the drills passes them); otherwise
# ports from DR_PORT_BASE (default 27400) up are used.
set -euo pipefail
KRYPTON=${KRYPTON:-krypton}
REGION=${REGION:-dr}
read -r -a _ports <<<"${DR_PORTS:-}"
_next_port=${DR_PORT_BASE:-27400}
declare -A API RAFT GOSSIP PID

# port: the next free port, in P (not echoed: a $(...) subshell would not consume it).
port() {
  if [ ${#_ports[@]} -gt 0 ]; then
    P=${_ports[0]}
    _ports=("${_ports[@]:1}")
  else
    P=$_next_port
    _next_port=$((_next_port + 1))
  fi
}

say() { echo "== $*"; }

# setup WORK: a CA, an operator and a service certificate, a development anchor and a gossip key.
setup() {
  W=$1
  mkdir -p "$W"
  cd "$W"
  "$KRYPTON" certs ca -dir pki >/dev/null
  "$KRYPTON" certs operator -dir pki admin >/dev/null
  "$KRYPTON" certs service -dir pki t1 s1 >/dev/null
  ANCHOR=$("$KRYPTON" dev -new-anchor "$W/anchor.key")
  head -c 32 /dev/urandom | base64 >gossip.key
  chmod 600 gossip.key
  export KRYPTON_CA_CERT=pki/ca.pem
  trap teardown EXIT
}

# ports ID: give node ID its addresses, and issue its certificate.
ports() {
  port
  API[$1]=127.0.0.1:$P
  port
  RAFT[$1]=127.0.0.1:$P
  port
  GOSSIP[$1]=127.0.0.1:$P
  "$KRYPTON" certs node -dir pki -region "$REGION" "$1" >/dev/null
}

# start ID EXPECT JOIN: start node ID (its data in ./ID) with -bootstrap-expect EXPECT, joining the
# gossip addresses JOIN (comma-separated; may be empty).
start() {
  local id=$1 expect=$2 join=$3
  [ -n "${API[$id]:-}" ] || ports "$id"
  "$KRYPTON" server -node-id "$id" -region "$REGION" -data-dir "$id" \
    -api-addr "${API[$id]}" -raft-addr "${RAFT[$id]}" -gossip-addr "${GOSSIP[$id]}" \
    -bootstrap-expect "$expect" -join "$join" -gossip-key-file gossip.key \
    -ca-cert pki/ca.pem -cert "pki/node-$id.pem" -key "pki/node-$id-key.pem" -dev-anchor \
    >>"$id.log" 2>&1 &
  PID[$id]=$!
}

# op ID ARGS...: an operator command against node ID.
op() {
  local id=$1
  shift
  KRYPTON_ADDR=${API[$id]} KRYPTON_CLIENT_CERT=pki/operator-admin.pem KRYPTON_CLIENT_KEY=pki/operator-admin-key.pem \
    "$KRYPTON" "$@"
}

# svc ID ARGS...: a command of service t1/s1 against node ID.
svc() {
  local id=$1
  shift
  KRYPTON_ADDR=${API[$id]} KRYPTON_CLIENT_CERT=pki/service-t1-s1.pem KRYPTON_CLIENT_KEY=pki/service-t1-s1-key.pem \
    "$KRYPTON" "$@"
}

# serving ID: wait (up to 90 s) until node ID holds a serving lease.
serving() {
  local id=$1 deadline=$((SECONDS + 90))
  until op "$id" status -format json 2>/dev/null | grep -q LEASE_STATE_SERVING; do
    if [ $SECONDS -ge $deadline ] || ! kill -0 "${PID[$id]}" 2>/dev/null; then
      echo "node $id does not serve (within 90 s, or it exited); status: $(op "$id" status 2>&1 | tail -3); its log:" >&2
      tail -30 "$id.log" >&2
      return 1
    fi
    sleep 0.2 # a poll under the deadline above
  done
}

# retry ARGS...: run a command until it succeeds, for up to 60 s (a node just started may not
# listen yet).
retry() {
  local deadline=$((SECONDS + 60))
  until "$@"; do
    if [ $SECONDS -ge $deadline ]; then
      echo "still failing after 60 s: $*" >&2
      return 1
    fi
    sleep 0.5 # a poll under the deadline above
  done
}

# kill9 ID: the machine of node ID is lost.
kill9() {
  kill -9 "${PID[$1]}" 2>/dev/null || true
  wait "${PID[$1]}" 2>/dev/null || true
  unset "PID[$1]"
}

# stop ID: stop node ID (SIGTERM) and wait for it.
stop() {
  kill -TERM "${PID[$1]}" 2>/dev/null || true
  wait "${PID[$1]}" 2>/dev/null || true
  unset "PID[$1]"
}

teardown() {
  for id in "${!PID[@]}"; do
    kill -9 "${PID[$id]}" 2>/dev/null || true
  done
  wait 2>/dev/null || true
}

# workload ID: tenant t1, key t1/s1 at version 2 with version 1 revoked; BLOB1 (v1, revoked) and
# BLOB2 (v2) are wraps of the same data key, whose base64 is in DATAKEY.
workload() {
  local id=$1
  op "$id" tenant create -anchor "$ANCHOR" t1 >/dev/null
  op "$id" key create t1 s1 >/dev/null
  head -c 32 /dev/urandom >datakey
  chmod 600 datakey
  DATAKEY=$(base64 <datakey)
  BLOB1=$(svc "$id" wrap -key t1/s1 -plaintext-file datakey)
  op "$id" key rotate t1 s1 >/dev/null
  BLOB2=$(svc "$id" wrap -key t1/s1 -plaintext-file datakey)
  op "$id" key revoke -reason "dr drill" t1 s1 1 >/dev/null
}

# check ID: on node ID, BLOB2 unwraps to the data key, BLOB1 stays refused as revoked, and a write
# is acknowledged.
check() {
  local id=$1 got
  got=$(svc "$id" unwrap -show-plaintext "$BLOB2")
  [ "$got" = "$DATAKEY" ] || { echo "node $id: BLOB2 did not unwrap to the data key" >&2; return 1; }
  if svc "$id" unwrap "$BLOB1" >unwrap1.out 2>&1; then
    echo "node $id: the revoked version 1 unwrapped" >&2
    return 1
  fi
  grep -qi revoked unwrap1.out || { echo "node $id: BLOB1 refused, but not as revoked: $(cat unwrap1.out)" >&2; return 1; }
  op "$id" key rotate t1 s1 >/dev/null
  echo "node $id: v2 unwraps, the revoked v1 is refused, writes are acknowledged"
}
