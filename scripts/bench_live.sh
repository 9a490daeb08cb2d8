#!/usr/bin/env bash
# scripts/bench_live.sh: real throughput through the lab's firewall namespace, nine ways, two labs.
#
#   sudo scripts/bench_live.sh            # results on stdout and in docs/benchmarks.md ("## Live lab")
#   BENCH_SECONDS=5 sudo scripts/bench_live.sh
#   sudo scripts/bench_live.sh flood [--seconds 20] [--modes openers,nolimit,single]
#                                         # the SYN flood section instead (scripts/bench_flood.py;
#                                         # docs/benchmarks.md "## Floods (issue 15)")
#   sudo scripts/bench_live.sh workers    # the several-workers rows instead: UDP 64-byte
#                                         # datagrams from 4 flows (iperf3 -P 4), stateful,
#                                         # --workers 1 and --workers 2 alternately, twice each
#                                         # (docs/benchmarks.md "## Live lab: several workers")
#
# iperf3 TCP (one stream) and UDP (64-byte datagrams, unlimited rate) from `client` to `server`:
#   kernel      forwarding only: no queue rules, no consumer
#   accept-all  the queue rules and `python -m fw.lab.nfqueue` (the minimal consumer), with
#               each queue backend (netfilterqueue, netlink)
#   stateless   fwlab, tests/lab/rules/bench-stateless.fw
#   stateful    fwlab, tests/lab/rules/bench-stateful.fw (swapped in with `fwlab reload`)
#   masquerade  fwlab, tests/lab/rules/bench-masq.fw ("n/a" when nothing was translated)
# the three fwlab rows once per backend (`fwlab up --backend`: a lab each), plus the time of
# `fwlab up` and `fwlab down` (the netlink lab). Every run is bounded (BENCH_SECONDS + 10 s);
# the labs have names of their own and are removed on exit, whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
if [ "${1:-}" = flood ]; then shift; exec "$PY" scripts/bench_flood.py "$@"; fi
MODE=${1:-all}
SECS=${BENCH_SECONDS:-3}
NAME="bench$$"
SRV=203.0.113.10
RULES=tests/lab/rules
OUT=$(mktemp -d /tmp/fwlab-bench.XXXXXX)
CONSUMER_PID=""
SERVER_PID=""

fwlab() { "$PY" -m fw "$@"; }
now() { date +%s.%N; }

cleanup() {
    for pid in $SERVER_PID $CONSUMER_PID; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    for lab in "$NAME" "${NAME}b"; do fwlab down --name "$lab" >/dev/null 2>&1 || true; done
    rm -rf "$OUT"
}
trap cleanup EXIT

[ "$(id -u)" = 0 ] || { echo "bench_live.sh needs root: run it with sudo" >&2; exit 2; }
command -v iperf3 >/dev/null || { echo "bench_live.sh needs iperf3" >&2; exit 2; }

# one iperf3 run (tcp|udp) -> prints "Gbit/s" (tcp) or "kpps" (udp, received), or n/a
iperf() {
    local proto=$1 extra=() json="$OUT/$1.json"
    [ "$proto" = udp ] && extra=(-u -b 0 -l 64)
    [ "$proto" = udp4 ] && extra=(-u -b 0 -l 64 -P 4)  # 4 flows: 4 client ports
    ip netns exec "fwl-$NAME-server" timeout $((SECS + 10)) iperf3 -s -1 -B "$SRV" -p 5201 \
        >/dev/null 2>&1 &
    SERVER_PID=$!
    for _ in $(seq 50); do  # until it listens (at most 2.5 s)
        ip netns exec "fwl-$NAME-server" ss -Hltn "sport = :5201" | grep -q . && break
        sleep 0.05
    done
    if ip netns exec "fwl-$NAME-client" timeout $((SECS + 10)) \
        iperf3 -c "$SRV" -p 5201 -t "$SECS" -J "${extra[@]}" >"$json" 2>/dev/null; then
        "$PY" - "$proto" "$json" <<'EOF'
import json, sys
proto, path = sys.argv[1], sys.argv[2]
end = json.load(open(path))["end"]
if proto == "tcp":
    print(f"{end['sum_received']['bits_per_second'] / 1e9:.3f}")
else:
    s = end["sum"]
    print(f"{(s['packets'] - s['lost_packets']) / s['seconds'] / 1e3:.1f}")
EOF
    else
        echo n/a
    fi
    kill "$SERVER_PID" 2>/dev/null || true
    wait "$SERVER_PID" 2>/dev/null || true
    SERVER_PID=""
}

declare -A TCP UDP
measure() { TCP[$1]=$(iperf tcp); UDP[$1]=$(iperf udp); echo "  $1: tcp ${TCP[$1]} Gbit/s, udp ${UDP[$1]} kpps" >&2; }
supervisor_pid() { fwlab status --name "$1" --json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["supervisor"]["supervisor_pid"])'; }

# one lab per backend: the engine's three rule files, then (the last lab) the consumers
engine_rows() {  # backend label
    measure "$2-stateless"
    fwlab reload --name "$NAME" "$RULES/bench-stateful.fw" >/dev/null
    measure "$2-stateful"
    fwlab reload --name "$NAME" "$RULES/bench-masq.fw" >/dev/null
    measure "$2-masquerade"
    if [ "$(fwlab nat --name "$NAME" --json | "$PY" -c 'import json,sys; print(len(json.load(sys.stdin)))')" = 0 ]; then
        TCP[$2-masquerade]="n/a"; UDP[$2-masquerade]="n/a"  # nothing translated: not a NAT number
        echo "  masquerade: no NAT entries, reported as n/a" >&2
    fi
}

# --workers 1 against --workers 2, in one run: UDP 64 B from 4 flows, the stateful rules
workers_rows() {
    local round n
    for round in 1 2; do
        for n in 1 2; do
            fwlab up --name "$NAME" --workers "$n" --rules "$RULES/bench-stateful.fw" >/dev/null
            UDP["w$n-$round"]=$(iperf udp4)
            fwlab status --name "$NAME" --json | "$PY" -c 'import json,sys
d = json.load(sys.stdin)["daemon"]
print(" ".join(str(w["engine"]["packets"]["packets"]) for w in d.get("workers") or [d]))' \
                >"$OUT/split"
            SPLIT["w$n-$round"]=$(cat "$OUT/split")
            echo "  --workers $n (round $round): udp ${UDP[w$n-$round]} kpps," \
                "packets per worker ${SPLIT[w$n-$round]}" >&2
            fwlab down --name "$NAME" >/dev/null
        done
    done
}

if [ "$MODE" = workers ]; then
    declare -A UDP SPLIT
    echo "bench_live workers: lab $NAME, ${SECS} s per iperf3 run" >&2
    workers_rows
    # the ceiling: the same lab without the engine (its supervisor stopped: fail closed), the
    # queue rules taken out, the kernel forwarding alone
    fwlab up --name "$NAME" --rules "$RULES/bench-stateful.fw" >/dev/null
    kill "$(supervisor_pid "$NAME")"
    sleep 1
    for tool in iptables-nft ip6tables-nft; do ip netns exec "fwl-$NAME-fw" "$tool" -t raw -F; done
    UDP_kernel=$(iperf udp4)
    echo "  kernel forwarding, no queue: udp $UDP_kernel kpps" >&2
    fwlab down --name "$NAME" >/dev/null
    for key in w1-1 w2-1 w1-2 w2-2; do
        export "UDP_${key//-/_}=${UDP[$key]}" "SPLIT_${key//-/_}=${SPLIT[$key]}"
    done
    export SECS UDP_kernel
    "$PY" "$(dirname "$0")/bench_live_report.py" workers
    exit 0
fi

echo "bench_live: labs $NAME, ${NAME}b, ${SECS} s per iperf3 run" >&2
t0=$(now); fwlab up --name "$NAME" --backend netlink --rules "$RULES/bench-stateless.fw" >/dev/null; t1=$(now)
UP_S=$(echo "$t1 - $t0" | bc)
BUILD_S=$("$PY" -c "import json; print(round(json.load(open('/run/fwlab/$NAME/lab.json'))['up_seconds'], 3))")
engine_rows netlink nl
t0=$(now); fwlab down --name "$NAME" >/dev/null; t1=$(now)
DOWN_S=$(echo "$t1 - $t0" | bc)

NAME="${NAME}b"
FWNS="fwl-$NAME-fw"
fwlab up --name "$NAME" --backend netfilterqueue --rules "$RULES/bench-stateless.fw" >/dev/null
engine_rows netfilterqueue nfq

# the same lab without the engine: stop its supervisor, which stops the daemon and restarts
# nothing (fail closed), then take the queue rules out
kill "$(supervisor_pid "$NAME")"
sleep 1
for tool in iptables-nft ip6tables-nft; do ip netns exec "$FWNS" "$tool" -t raw -F; done
measure kernel
"$PY" -c "from fw.lab.nfqueue import install_queue; install_queue('$FWNS')"
for backend in netfilterqueue netlink; do
    ip netns exec "$FWNS" "$PY" -m fw.lab.nfqueue --backend "$backend" >"$OUT/consumer.out" 2>&1 &
    CONSUMER_PID=$!
    for _ in $(seq 100); do grep -q ready "$OUT/consumer.out" && break; sleep 0.05; done
    measure "all-$backend"
    kill "$CONSUMER_PID"; wait "$CONSUMER_PID" 2>/dev/null || true; CONSUMER_PID=""
done
fwlab down --name "$NAME" >/dev/null

ROWS="kernel all-netfilterqueue all-netlink nfq-stateless nfq-stateful nfq-masquerade nl-stateless nl-stateful nl-masquerade"
for key in $ROWS; do export "TCP_${key//-/_}=${TCP[$key]}" "UDP_${key//-/_}=${UDP[$key]}"; done
export SECS UP_S BUILD_S DOWN_S
"$PY" "$(dirname "$0")/bench_live_report.py" live
