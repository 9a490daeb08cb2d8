#!/usr/bin/env bash
# scripts/soak.sh: a long mixed load through one lab, reporting the daemon's memory and errors.
#
#   sudo scripts/soak.sh                  # 30 minutes (the figure in docs/benchmarks.md)
#   SOAK_SECONDS=120 sudo scripts/soak.sh  # a short one
#
# The default lab with tests/lab/rules/soak.fw (stateful-web.fw and iperf3's port). From `client`,
# in rounds until the time is up: a TCP bulk transfer (iperf3, 2 s, 20 Mbit/s), UDP (iperf3,
# 2 s, 5 Mbit/s), pings, curl through masquerade to the server and through the port forward.
# Every SAMPLE seconds one line: elapsed time, the daemon's resident memory (kB), conntrack
# entries, packets judged, malformed packets, daemon restarts, failed client commands. Ends with
# a summary line; exit 1 if any client command failed or the daemon restarted. Bounded: every
# client command has a timeout; the lab has a name of its own and is removed on exit.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
SECS=${SOAK_SECONDS:-1800}
SAMPLE=${SOAK_SAMPLE:-30}
NAME="soak$$"
SRV=203.0.113.10
FAILED=0
WEB_PID=""

fwlab() { "$PY" -m fw "$@"; }
cleanup() {
    [ -n "$WEB_PID" ] && kill "$WEB_PID" 2>/dev/null || true
    fwlab down --name "$NAME" >/dev/null 2>&1 || true
}
trap cleanup EXIT
[ "$(id -u)" = 0 ] || { echo "soak.sh needs root: run it with sudo" >&2; exit 2; }

fwlab up --name "$NAME" --rules tests/lab/rules/soak.fw >/dev/null
in_ns() { local host=$1; shift; ip netns exec "fwl-$NAME-$host" "$@"; }
in_ns server timeout $((SECS + 60)) "$PY" -m fw.lab.webserver --seconds $((SECS + 30)) \
    >/dev/null 2>&1 &
WEB_PID=$!
in_ns web timeout $((SECS + 60)) "$PY" -m fw.lab.webserver --seconds $((SECS + 30)) \
    >/dev/null 2>&1 &
in_ns server timeout $((SECS + 60)) iperf3 -s -B "$SRV" >/dev/null 2>&1 &

# try HOST COMMAND...: run it in the host's namespace, bounded; count it when it fails
try() {
    local host=$1; shift
    timeout 15 ip netns exec "fwl-$NAME-$host" "$@" >/dev/null 2>&1 || FAILED=$((FAILED + 1))
}
round() {
    try client iperf3 -c "$SRV" -t 2 -b 20M
    try client iperf3 -c "$SRV" -u -t 2 -b 5M
    try client ping -c 5 -i 0.2 "$SRV"
    try client curl -s -o /dev/null --max-time 5 "http://$SRV/"
    try attacker curl -s -o /dev/null --max-time 5 "http://203.0.113.1:8080/"
}
sample() {
    fwlab status --name "$NAME" --json | "$PY" scripts/soak_sample.py "$1" "$FAILED"
}

start=$(date +%s)
next_sample=0
while :; do
    elapsed=$(($(date +%s) - start))
    [ "$elapsed" -ge "$SECS" ] && break
    if [ "$elapsed" -ge "$next_sample" ]; then sample "$elapsed"; next_sample=$((elapsed + SAMPLE)); fi
    round
done
sample "$SECS"
echo "soak: ${SECS}s, $FAILED failed client commands"
[ "$FAILED" -eq 0 ]
