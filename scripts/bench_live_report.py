"""The sections scripts/bench_live.sh writes into docs/benchmarks.md, from the figures it
exports (environment variables: TCP_<row>, UDP_<row>, SECS, ...): `live` for the nine paths,
`workers` for --workers 1 against 2. One module for both, so they share the number parsing
and write through bench_doc like every other benchmark script."""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_doc import write_section

ROWS = [("kernel forwarding, no queue", "kernel"),
        ("accept-all consumer, netfilterqueue", "all_netfilterqueue"),
        ("accept-all consumer, netlink", "all_netlink"),
        ("fwlab stateless, netfilterqueue", "nfq_stateless"),
        ("fwlab stateful, netfilterqueue", "nfq_stateful"),
        ("fwlab stateful + masquerade, netfilterqueue", "nfq_masquerade"),
        ("fwlab stateless, netlink", "nl_stateless"),
        ("fwlab stateful, netlink", "nl_stateful"),
        ("fwlab stateful + masquerade, netlink", "nl_masquerade")]
LIVE, WORKERS = "## Live lab", "## Live lab: several workers"


def num(value: str) -> float | None:
    try:
        return float(value)
    except ValueError:
        return None


def ratio(value: str, base: str) -> str:
    a, b = num(value), num(base)
    return f"{a / b:.2f}" if a is not None and b else "n/a"


def mean(values: list[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return sum(known) / len(known) if known else None


def note(e: os._Environ) -> str:
    return f" {e['BENCH_NOTE']}" if e.get("BENCH_NOTE") else ""


def live_section(e: os._Environ) -> str:
    cpu = next((line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), "?")
    iperf = subprocess.run(["iperf3", "--version"], capture_output=True,
                           text=True).stdout.split("\n")[0]
    lines = [
        LIVE, "",
        f"`sudo scripts/bench_live.sh` ({time.strftime('%Y-%m-%d')}, kernel {platform.release()}, "
        f"{os.cpu_count()} CPUs: {cpu}; {iperf.split(' (')[0]}; {e['SECS']} s per run). iperf3 "
        "from `client` to `server` through the firewall namespace of a lab (one lab per queue "
        "backend): TCP one stream, UDP 64-byte datagrams at unlimited rate (received packets per "
        "second). Client, server, the consumer and the kernel share the same CPUs; load average "
        f"at the end {os.getloadavg()[0]:.1f} (other work on the machine moves the absolute "
        "numbers; the ratios, measured minutes apart, move less)." + note(e), "",
        "| path | TCP Gbit/s | x kernel | x accept-all | UDP 64 B kpps | x accept-all |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for label, key in ROWS:
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
    ]
    return "\n".join(lines) + "\n"


def workers_section(e: os._Environ) -> str:
    m1 = mean([num(e[f"UDP_w1_{r}"]) for r in (1, 2)])
    m2 = mean([num(e[f"UDP_w2_{r}"]) for r in (1, 2)])
    lines = [
        WORKERS, "",
        f"`sudo scripts/bench_live.sh workers` ({time.strftime('%Y-%m-%d')}, kernel "
        f"{platform.release()}, {os.cpu_count()} CPUs; {e['SECS']} s per run). The default lab "
        "with tests/lab/rules/bench-stateful.fw, netlink backend; iperf3 UDP, 64-byte datagrams "
        "at unlimited rate from 4 flows (`-P 4`: four client ports) from `client` to `server`, "
        "received packets per second; `fwlab up --workers 1` and `--workers 2` alternately, twice "
        "each. iperf3's client and server, the kernel and the workers share the CPUs. Load "
        f"average at the end {os.getloadavg()[0]:.1f}." + note(e), "",
        "| round | --workers 1 kpps | --workers 2 kpps | packets judged per worker (--workers 2) |",
        "|---|---:|---:|---|",
    ]
    for r in (1, 2):
        lines.append(f"| {r} | {e[f'UDP_w1_{r}']} | {e[f'UDP_w2_{r}']} | {e[f'SPLIT_w2_{r}']} |")
    measured = f"{m2 / m1:.2f}" if m1 and m2 else "n/a"
    lines += ["", "The same 4 flows with no queue at all (kernel forwarding, the lab's engine "
              f"stopped and its queue rules removed): {e['UDP_kernel']} kpps, the senders' "
              "ceiling here.", "",
              f"Goal (issue 13): --workers 2 >= 1.3 x --workers 1; measured {measured} x "
              "(the means of the two rounds)."]
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("which", choices=["live", "workers"])
    parser.add_argument("--no-doc", action="store_true", help="print only")
    args = parser.parse_args()
    live = args.which == "live"
    section = (live_section if live else workers_section)(os.environ)
    print(section)
    if not args.no_doc:
        write_section(LIVE if live else WORKERS, section, after=None if live else LIVE)
    return 0


if __name__ == "__main__":
    sys.exit(main())
