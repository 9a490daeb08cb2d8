#!/usr/bin/env python3
"""How long the static exposure analysis takes (issue 6: well under 1 s for the examples, under
10 s for 10,000 rules).

Usage: .venv/bin/python scripts/bench_exposure.py [--sizes 1000 10000] [--repeat 3]
Prints one line per file: loading (parse and check) and the analysis, timed apart; the analysis
time includes the projections (every class's ports, addresses and senders).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from fw.analysis.exposure import analyse  # noqa: E402
from fw.dsl import load_ruleset  # noqa: E402


def generated_rules(count: int, seed: int = 6) -> str:
    """A big stateful file of the kinds of rules large sets hold: per-server port openings on
    the inside (IPv4 and IPv6, TCP and UDP, ports and ranges), outbound rules per LAN host,
    a blocklist of outside senders (rules that cut across every server), a few port forwards."""
    rng = random.Random(seed)
    lines = ["mode stateful", "define web = { 80, 443 }", "policy input drop",
             "policy forward drop", "policy output accept", "forward {",
             "    ct state established,related accept", "    ct state invalid drop"]
    services = [22, 25, 53, 80, 443, 993, 3306, 5432, 8080, 8443]
    for _i in range(count - 3):
        roll = rng.random()
        host = f"192.0.2.{rng.randint(2, 254)}"
        if roll < 0.45:
            proto = rng.choice(["tcp", "tcp", "udp"])
            port = rng.choice(services) if rng.random() < 0.7 else rng.randint(1024, 65535)
            verdict = "accept" if rng.random() < 0.8 else "drop"
            lines.append(f"    iif wan ip daddr {host} {proto} dport {port} {verdict}")
        elif roll < 0.60:
            v6 = f"2001:db8:1::{rng.randint(2, 0xFFFF):x}"
            port = rng.choice(services)
            lines.append(f"    iif wan ip6 daddr {v6} tcp dport {port} accept")
        elif roll < 0.75:
            src = f"198.51.100.{rng.randint(1, 254)}" if rng.random() < 0.5 else \
                f"203.0.113.{rng.randint(2, 254)}/{rng.choice([28, 30, 32])}"
            lines.append(f"    iif wan ip saddr {src} drop comment \"blocklist\"")
        elif roll < 0.85:
            lo = rng.randint(1024, 60000)
            lines.append(f"    iif wan ip daddr {host} udp dport {lo}-{lo + rng.randint(1, 99)} "
                         "accept")
        else:
            lines.append(f"    iif lan ip saddr {host} tcp dport $web accept")
    lines += ["    log prefix \"drop \" drop", "}", "nat {", "    oif wan masquerade"]
    for port in (2222, 8080, 8443):
        lines.append(f"    iif wan tcp dport {port} dnat to 192.0.2.{port % 250}:22")
    lines.append("}")
    return "\n".join(lines) + "\n"


def best_of(repeat: int, fn):
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def bench(path: Path, repeat: int, name: str) -> None:
    load_s, ruleset = best_of(repeat, lambda: load_ruleset(str(path)))
    rules = sum(len(c) for c in ruleset.chains.values()) + len(ruleset.nat)

    def run():
        exposure = analyse(ruleset)
        exposure.classes()
        return exposure

    analyse_s, exposure = best_of(repeat, run)
    syn = exposure["tcp_syn"]
    print(f"{name:<28} {rules:>6} rules  load {load_s:7.3f} s  analysis {analyse_s:7.3f} s  "
          f"(tcp_syn: {syn.count} ports, {len(exposure.accepted)} boxes)")


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    for path in sorted((ROOT / "rules").glob("*.fw")):
        bench(path, args.repeat, f"rules/{path.name}")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            path = Path(tmp) / f"generated-{size}.fw"
            path.write_text(generated_rules(size))
            bench(path, args.repeat, f"generated {size}")


if __name__ == "__main__":
    main()
