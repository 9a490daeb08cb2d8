#!/usr/bin/env bash
# scripts/bench_live.sh: real throughput through the lab's firewall namespace, five ways, one lab.
#
#   sudo scripts/bench_live.sh            # results on stdout and in docs/benchmarks.md ("## Live lab")
#   BENCH_SECONDS=5 sudo scripts/bench_live.sh
#
# iperf3 TCP (one stream) and UDP (64-byte datagrams, unlimited rate) from `client` to `server`:
#   kernel      forwarding only: no queue rules, no consumer
#   accept-all  the queue rules and `python -m fw.lab.nfqueue` (the minimal consumer)
#   stateless   fwlab, tests/lab/rules/bench-stateless.fw
#   stateful    fwlab, tests/lab/rules/bench-stateful.fw (swapped in with `fwlab reload`)
#   masquerade  fwlab, tests/lab/rules/bench-masq.fw ("n/a" while the engine has no NAT)
# plus the time of `fwlab up` and `fwlab down`. Every run is bounded (BENCH_SECONDS + 10 s);
# the lab has a name of its own and is removed on exit, whatever happens.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PY:-.venv/bin/python}
SECS=${BENCH_SECONDS:-3}
NAME="bench$$"
FWNS="fwl-$NAME-fw"
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
    fwlab down --name "$NAME" >/dev/null 2>&1 || true
    rm -rf "$OUT"
}
trap cleanup EXIT

[ "$(id -u)" = 0 ] || { echo "bench_live.sh needs root: run it with sudo" >&2; exit 2; }
command -v iperf3 >/dev/null || { echo "bench_live.sh needs iperf3" >&2; exit 2; }

# one iperf3 run (tcp|udp) -> prints "Gbit/s" (tcp) or "kpps" (udp, received), or n/a
iperf() {
    local proto=$1 extra=() json="$OUT/$1.json"
    [ "$proto" = udp ] && extra=(-u -b 0 -l 64)
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
supervisor_pid() { fwlab status --name "$NAME" --json | "$PY" -c 'import json,sys; print(json.load(sys.stdin)["supervisor"]["supervisor_pid"])'; }

echo "bench_live: lab $NAME, ${SECS} s per iperf3 run" >&2
t0=$(now); fwlab up --name "$NAME" --rules "$RULES/bench-stateless.fw" >/dev/null; t1=$(now)
UP_S=$(echo "$t1 - $t0" | bc)
BUILD_S=$("$PY" -c "import json; print(round(json.load(open('/run/fwlab/$NAME/lab.json'))['up_seconds'], 3))")

measure stateless
fwlab reload --name "$NAME" "$RULES/bench-stateful.fw" >/dev/null
measure stateful
fwlab reload --name "$NAME" "$RULES/bench-masq.fw" >/dev/null
measure masquerade
if [ "$(fwlab nat --name "$NAME" --json | "$PY" -c 'import json,sys; print(len(json.load(sys.stdin)))')" = 0 ]; then
    TCP[masquerade]="n/a"; UDP[masquerade]="n/a"  # nothing was translated: not a NAT number
    echo "  masquerade: no NAT entries, reported as n/a" >&2
fi

# the same lab without the engine: stop its supervisor, which stops the daemon and restarts
# nothing (fail closed), then take the queue rules out
kill "$(supervisor_pid)"
sleep 1
for tool in iptables-nft ip6tables-nft; do ip netns exec "$FWNS" "$tool" -t raw -F; done
measure kernel
"$PY" -c "from fw.lab.nfqueue import install_queue; install_queue('$FWNS')"
ip netns exec "$FWNS" "$PY" -m fw.lab.nfqueue >"$OUT/consumer.out" 2>&1 &
CONSUMER_PID=$!
for _ in $(seq 100); do grep -q ready "$OUT/consumer.out" && break; sleep 0.05; done
measure accept-all
kill "$CONSUMER_PID"; wait "$CONSUMER_PID" 2>/dev/null || true; CONSUMER_PID=""

t0=$(now); fwlab down --name "$NAME" >/dev/null; t1=$(now)
DOWN_S=$(echo "$t1 - $t0" | bc)

export SECS UP_S BUILD_S DOWN_S
export TCP_KERNEL=${TCP[kernel]} TCP_ALL=${TCP[accept-all]} TCP_SL=${TCP[stateless]} \
    TCP_SF=${TCP[stateful]} TCP_MASQ=${TCP[masquerade]} UDP_KERNEL=${UDP[kernel]} \
    UDP_ALL=${UDP[accept-all]} UDP_SL=${UDP[stateless]} UDP_SF=${UDP[stateful]} \
    UDP_MASQ=${UDP[masquerade]}
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

rows = [("kernel forwarding, no queue", "KERNEL"), ("accept-all NFQUEUE consumer", "ALL"),
        ("fwlab stateless", "SL"), ("fwlab stateful", "SF"), ("fwlab stateful + masquerade", "MASQ")]
cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
iperf = subprocess.run(["iperf3", "--version"], capture_output=True, text=True).stdout.split("\n")[0]
lines = [
    "## Live lab",
    "",
    f"`sudo scripts/bench_live.sh` ({time.strftime('%Y-%m-%d')}, kernel {platform.release()}, "
    f"{os.cpu_count()} CPUs: {cpu}; {iperf.split(' (')[0]}; {e['SECS']} s per run). iperf3 from "
    "`client` to `server` through the firewall namespace of one lab: TCP one stream, UDP 64-byte "
    "datagrams at unlimited rate (received packets per second). Client, server, the consumer "
    "and the kernel share the same CPUs; load average at the end "
    f"{os.getloadavg()[0]:.1f} (other work on the machine moves the absolute numbers; the "
    "ratios, measured minutes apart, move less).",
    "",
    "| path | TCP Gbit/s | x kernel | x accept-all | UDP 64 B kpps | x accept-all |",
    "|---|---:|---:|---:|---:|---:|",
]
for label, key in rows:
    t, u = e[f"TCP_{key}"], e[f"UDP_{key}"]
    lines.append(f"| {label} | {t} | {ratio(t, e['TCP_KERNEL'])} | {ratio(t, e['TCP_ALL'])} "
                 f"| {u} | {ratio(u, e['UDP_ALL'])} |")
lines += [
    "",
    f"`fwlab up` (default lab, daemon ready): {float(e['UP_S']):.2f} s, of which building the "
    f"namespaces {float(e['BUILD_S']):.2f} s; `fwlab down`: {float(e['DOWN_S']):.2f} s.",
    "Goal (issue 5): fwlab stateful >= 0.7 x the accept-all consumer (TCP).",
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
