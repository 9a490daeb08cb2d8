#!/usr/bin/env python3
"""How long the static exposure analysis takes (issue 6: well under 1 s for the examples, under
10 s for 10,000 rules).

Usage: .venv/bin/python scripts/bench_exposure.py [--sizes 1000 10000] [--repeat 3]
                                                  [--worst 100 200 400] [--diff]
                                                  [--unreachable]
Prints one line per file: loading (parse and check) and the analysis, timed apart; the analysis
time includes the projections (every class's ports, addresses and senders). `--worst` times the
known bad shape (issue 12: rules narrow on different fields, interleaved) at the given sizes,
`--diff` also times `fwlab diff` of each generated file against itself with its last rule
changed (the walk is the same, done for both files and every ct state).
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

from fw.analysis.diff import diff  # noqa: E402
from fw.analysis.exposure import analyse  # noqa: E402
from fw.analysis.unreachable import unreachable  # noqa: E402
from fw.dsl import load_ruleset  # noqa: E402
from fw.engine.routing import default_routing  # noqa: E402


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


def worst_rules(count: int, seed: int = 12) -> str:
    """The shape that splits the undecided region quadratically: rules narrow on different
    fields, interleaved at random: source prefix + TCP port, host + UDP source port, TCP
    source port + destination range + SYN, IPv6 host + `dport !=`."""
    rng = random.Random(seed)
    lines = ["mode stateful", "policy input drop", "policy forward drop", "policy output accept",
             "forward {", "    ct state established,related accept", "    ct state invalid drop"]
    for _ in range(count - 2):
        roll, verdict = rng.random(), rng.choice(["accept", "accept", "drop"])
        port = rng.randint(1, 65535)
        if roll < 0.25:
            net = f"198.51.{rng.randint(0, 255)}.{rng.randint(0, 15) * 16}/28"
            lines.append(f"    iif wan ip saddr {net} tcp dport {port} {verdict}")
        elif roll < 0.5:
            host = f"192.0.2.{rng.randint(2, 254)}"
            lines.append(f"    iif wan ip daddr {host} udp sport {port} {verdict}")
        elif roll < 0.75:
            lo = rng.randint(1, 60000)
            lines.append(f"    iif wan tcp sport {port} tcp dport {lo}-{lo + rng.randint(0, 500)} "
                         f"tcp flags syn,!ack {verdict}")
        else:
            host = f"2001:db8:1::{rng.randint(2, 0xFFFF):x}"
            lines.append(f"    iif wan ip6 daddr {host} tcp dport != {port} {verdict}")
    return "\n".join([*lines, "}"]) + "\n"


def best_of(repeat: int, fn):
    best, out = float("inf"), None
    for _ in range(repeat):
        start = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - start)
    return best, out


def bench_diff(path: Path, repeat: int, name: str) -> None:
    """The file against itself with its last forward rule's verdict flipped."""
    text = path.read_text()
    lines = text.splitlines()
    last = max(i for i, line in enumerate(lines) if line.rstrip().endswith(("accept", "drop")))
    flip = lines[last].rsplit(" ", 1)
    lines[last] = f"{flip[0]} {'drop' if flip[1] == 'accept' else 'accept'}"
    other = path.with_name(path.stem + "-changed.fw")
    other.write_text("\n".join(lines) + "\n")
    a, b = load_ruleset(str(path)), load_ruleset(str(other))
    seconds, result = best_of(repeat, lambda: diff(a, b, default_routing()))
    print(f"{'diff ' + name:<28} {len(result.differences):>6} regions  {seconds:7.3f} s")


def bench_unreachable(path: Path, repeat: int, name: str) -> None:
    ruleset = load_ruleset(str(path))
    seconds, found = best_of(repeat, lambda: unreachable(ruleset))
    print(f"{'unreachable ' + name:<28} {len(found):>6} rules    {seconds:7.3f} s")


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
    parser.add_argument("--worst", type=int, nargs="*", default=[])
    parser.add_argument("--diff", action="store_true")
    parser.add_argument("--unreachable", action="store_true")
    args = parser.parse_args()
    for path in sorted((ROOT / "rules").glob("*.fw")):
        bench(path, args.repeat, f"rules/{path.name}")
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            path = Path(tmp) / f"generated-{size}.fw"
            path.write_text(generated_rules(size))
            bench(path, args.repeat, f"generated {size}")
            if args.diff:
                bench_diff(path, args.repeat, f"generated {size}")
            if args.unreachable:
                bench_unreachable(path, args.repeat, f"generated {size}")
        for size in args.worst:
            path = Path(tmp) / f"worst-{size}.fw"
            path.write_text(worst_rules(size))
            bench(path, 1, f"worst case {size}")
            if args.diff:
                bench_diff(path, 1, f"worst case {size}")
            if args.unreachable:
                bench_unreachable(path, 1, f"worst case {size}")


if __name__ == "__main__":
    main()
