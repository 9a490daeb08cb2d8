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
    "$PY" - <<'EOF'
import os, platform, re, time
from pathlib import Path

e = os.environ
def num(v):
    try:
        return float(v)
    except ValueError:
        return None
def mean(xs):
    xs = [x for x in xs if x is not None]
    return sum(xs) / len(xs) if xs else None
m1 = mean([num(e[f"UDP_w1_{r}"]) for r in (1, 2)])
m2 = mean([num(e[f"UDP_w2_{r}"]) for r in (1, 2)])
lines = [
    "## Live lab: several workers",
    "",
    f"`sudo scripts/bench_live.sh workers` ({time.strftime('%Y-%m-%d')}, kernel "
    f"{platform.release()}, {os.cpu_count()} CPUs; {e['SECS']} s per run). The default lab with "
    "tests/lab/rules/bench-stateful.fw, netlink backend; iperf3 UDP, 64-byte datagrams at "
    "unlimited rate from 4 flows (`-P 4`: four client ports) from `client` to `server`, received "
    "packets per second; `fwlab up --workers 1` and `--workers 2` alternately, twice each. "
    "iperf3's client and server, the kernel and the workers share the CPUs. Load average at "
    f"the end {os.getloadavg()[0]:.1f}." + (f" {e['BENCH_NOTE']}" if e.get("BENCH_NOTE") else ""),
    "",
    "| round | --workers 1 kpps | --workers 2 kpps | packets judged per worker (--workers 2) |",
    "|---|---:|---:|---|",
]
for r in (1, 2):
    lines.append(f"| {r} | {e[f'UDP_w1_{r}']} | {e[f'UDP_w2_{r}']} | {e[f'SPLIT_w2_{r}']} |")
ratio = f"{m2 / m1:.2f}" if m1 and m2 else "n/a"
lines += ["", f"The same 4 flows with no queue at all (kernel forwarding, the lab's engine "
          f"stopped and its queue rules removed): {e['UDP_kernel']} kpps, the senders' ceiling "
          "here.", "",
          f"Goal (issue 13): --workers 2 >= 1.3 x --workers 1; measured {ratio} x "
          "(the means of the two rounds).", ""]
section = "\n".join(lines)
print(section)
doc = Path("docs/benchmarks.md")
text = doc.read_text()
pattern = re.compile(r"^## Live lab: several workers\n.*?(?=^## |\Z)", re.S | re.M)
if pattern.search(text):
    text = pattern.sub(lambda m: section + "\n", text)
else:  # right after the live lab section
    live = re.compile(r"(^## Live lab\n.*?)(?=^## |\Z)", re.S | re.M)
    text = live.sub(lambda m: m.group(1) + section + "\n", text, count=1)
doc.write_text(text.rstrip("\n") + "\n")
EOF
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
"$PY" - <<'EOF'
import os, platform, re, subprocess, time
from pathlib import Path

e = os.environ
def num(v):
    try:
        return float(v)
    except ValueError:
        return None
def ratio(v, base):
    a, b = num(v), num(base)
    return f"{a / b:.2f}" if a is not None and b else "n/a"

rows = [("kernel forwarding, no queue", "kernel"),
        ("accept-all consumer, netfilterqueue", "all_netfilterqueue"),
        ("accept-all consumer, netlink", "all_netlink"),
        ("fwlab stateless, netfilterqueue", "nfq_stateless"),
        ("fwlab stateful, netfilterqueue", "nfq_stateful"),
        ("fwlab stateful + masquerade, netfilterqueue", "nfq_masquerade"),
        ("fwlab stateless, netlink", "nl_stateless"),
        ("fwlab stateful, netlink", "nl_stateful"),
        ("fwlab stateful + masquerade, netlink", "nl_masquerade")]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
iperf = subprocess.run(["iperf3", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
lines = [
    "## Live lab",
    "",
    f"`sudo scripts/bench_live.sh` ({time.strftime('%Y-%m-%d')}, kernel {platform.release()}, "
    f"{os.cpu_count()} CPUs: {cpu}; {iperf.split(' (')[0]}; {e['SECS']} s per run). iperf3 from "
    "`client` to `server` through the firewall namespace of a lab (one lab per queue backend): "
    "TCP one stream, UDP 64-byte datagrams at unlimited rate (received packets per second). "
    "Client, server, the consumer and the kernel share the same CPUs; load average at the end "
    f"{os.getloadavg()[0]:.1f} (other work on the machine moves the absolute numbers; the "
    "ratios, measured minutes apart, move less)." + (f" {e['BENCH_NOTE']}" if e.get("BENCH_NOTE")
                                                    else ""),
    "",
    "| path | TCP Gbit/s | x kernel | x accept-all | UDP 64 B kpps | x accept-all |",
    "|---|---:|---:|---:|---:|---:|",
]
for label, key in rows:
    t, u = e[f"TCP_{key}"], e[f"UDP_{key}"]
    lines.append(f"| {label} | {t} | {ratio(t, e['TCP_kernel'])} "
                 f"| {ratio(t, e['TCP_all_netfilterqueue'])} "
                 f"| {u} | {ratio(u, e['UDP_all_netfilterqueue'])} |")
lines += [
    "",
    f"`fwlab up` (default lab, daemon ready): {float(e['UP_S']):.2f} s, of which building the "
    f"namespaces {float(e['BUILD_S']):.2f} s; `fwlab down`: {float(e['DOWN_S']):.2f} s.",
    "Goals (issue 13, the netlink backend): stateful TCP >= 0.5 x kernel "
    f"({ratio(e['TCP_nl_stateful'], e['TCP_kernel'])}), stateful + masquerade TCP >= 0.3 x "
    f"kernel ({ratio(e['TCP_nl_masquerade'], e['TCP_kernel'])}), stateful UDP 64 B >= 1.0 x "
    "the netfilterqueue accept-all consumer "
    f"({ratio(e['UDP_nl_stateful'], e['UDP_all_netfilterqueue'])}). "
    "x accept-all: against the netfilterqueue consumer.",
    "",
]
section = "\n".join(lines)
print(section)
doc = Path("docs/benchmarks.md")
text = doc.read_text() if doc.exists() else "# Benchmarks\n"
pattern = re.compile(r"^## Live lab\n.*?(?=^## |\Z)", re.S | re.M)
text = pattern.sub(lambda m: section + "\n", text) if pattern.search(text) else (
    text.rstrip("\n") + "\n\n" + section)
doc.write_text(text.rstrip("\n") + "\n")
EOF
