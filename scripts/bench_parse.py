#!/usr/bin/env python3
"""How long parsing and checking take as rule files grow (issue: 10,000 rules in under 2 s).

Usage: .venv/bin/python scripts/bench_parse.py [--sizes 1000 10000] [--repeat 3]
Prints one line per size; the results go in docs/benchmarks.md by hand.
"""

from __future__ import annotations

import argparse
import random
import tempfile
import time
from pathlib import Path

from fw.dsl import load


def generated_rules(count: int, seed: int = 1) -> str:
    """A realistic large file: per-host, per-service rules with sets and defines."""
    rng = random.Random(seed)
    lines = ["mode stateful", "define web = { 80, 443 }", "define lan_net = 192.0.2.0/24",
             "policy input drop", "policy forward drop", "policy output accept", "forward {",
             "    ct state established,related accept", "    ct state invalid drop"]
    for i in range(count):
        host = f"198.51.{100 + (i // 250) % 2}.{i % 250 + 1}"
        kind = rng.choice(["tcp", "udp"])
        port = rng.randint(1, 65535)
        iface = rng.choice(["lan", "wan", "dmz"])
        lines.append(f"    iif {iface} ip daddr {host} {kind} dport {port} accept comment \"r{i}\"")
    lines += ["    iif lan ip saddr $lan_net tcp dport $web accept", "}"]
    return "\n".join(lines) + "\n"


def time_load(path: str, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        loaded = load(path)
        best = min(best, time.perf_counter() - start)
        assert not loaded.errors, loaded.errors[:3]
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[10, 1000, 10000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        warm = Path(tmp) / "warm.fw"
        warm.write_text(generated_rules(10))
        load(str(warm))  # the grammar is compiled once per process; do not count it
        for size in args.sizes:
            path = Path(tmp) / f"rules-{size}.fw"
            path.write_text(generated_rules(size))
            seconds = time_load(str(path), args.repeat)
            print(f"{size:>6} rules: {seconds:.3f} s  ({seconds / size * 1e6:.0f} us/rule)")


if __name__ == "__main__":
    main()
