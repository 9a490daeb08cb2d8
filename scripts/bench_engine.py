#!/usr/bin/env python3
"""Engine throughput on one core, in process (results go in docs/benchmarks.md).

  established   packets/s of known TCP flows through rules/stateful-web.fw
  new-flows     first packets (SYN) of new flows with 10, 1,000 and 10,000 rules, and the ratio
  replay        `fwlab replay` of a generated capture (default 1,000,000 packets), packets/s
  memory        conntrack bytes per entry at 1,000,000 entries (tracemalloc)
  nat           established packets/s through a masquerade, and the ratio to no NAT
  replay-workers  `fwlab replay --workers N` of that capture for each --workers N (wall time;
                not in the default set: it wants otherwise idle CPUs), --rounds times
                alternated, with the median ratio

Usage: .venv/bin/python scripts/bench_engine.py [established new-flows replay memory nat
       replay-workers] [--packets N] [--replay-packets N] [--entries N] [--workers N ...]
       [--rounds N]
"""

from __future__ import annotations

import argparse
import gc
import os
import random
import subprocess
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from fw import craft
from fw.dsl import load_ruleset
from fw.engine.engine import Engine

ROOT = Path(__file__).resolve().parent.parent
CLIENT_NET, SERVER, FW_WAN = "192.0.2.", "203.0.113.10", "203.0.113.1"


def rules_file(text: str) -> str:
    path = Path(tempfile.mkdtemp()) / "bench.fw"
    path.write_text(text)
    return str(path)


def flow_packets(flows: int, rounds: int, masquerade: bool = False):
    """Handshakes, then `rounds` of client data + server ACK per flow, interleaved. With
    `masquerade` the server answers the firewall's outside address (ports are preserved)."""
    setup, data = [], []
    for f in range(flows):
        client, sport = f"{CLIENT_NET}{2 + f % 200}", 20000 + f
        seen = FW_WAN if masquerade else client
        setup += [craft.tcp(client, SERVER, sport, 443, "S", seq=100),
                  craft.tcp(SERVER, seen, 443, sport, "SA", seq=900, ack=101),
                  craft.tcp(client, SERVER, sport, 443, "A", seq=101, ack=901)]
    for r in range(rounds):
        for f in range(flows):
            client, sport = f"{CLIENT_NET}{2 + f % 200}", 20000 + f
            seen = FW_WAN if masquerade else client
            seq = 101 + r * 100
            data.append(craft.tcp(client, SERVER, sport, 443, "PA", seq=seq, ack=901,
                                  payload=b"x" * 100))
            data.append(craft.tcp(SERVER, seen, 443, sport, "A", seq=901, ack=seq + 100))
    return setup, data


def rate(engine: Engine, packets: list[bytes], start: float = 1.0) -> float:
    process = engine.process
    gc.collect()
    began = time.process_time()
    for i, raw in enumerate(packets):
        process(raw, now=start + i * 1e-6)
    return len(packets) / (time.process_time() - began)


def bench_established(args: argparse.Namespace, nat: bool = False) -> float:
    text = (ROOT / "rules/stateful-web.fw").read_text()
    if not nat:
        text = text.replace("oif wan masquerade", "oif wan ip saddr 198.51.100.0/24 masquerade")
    engine = Engine(load_ruleset(rules_file(text)))
    setup, data = flow_packets(1000, max(1, args.packets // 2000), masquerade=nat)
    rate(engine, setup, start=0.0)
    return rate(engine, data)


def generated_rules(count: int) -> str:
    rng = random.Random(7)
    lines = ["mode stateful", "policy forward drop", "forward {",
             "    ct state established,related accept"]
    for i in range(count - 2):
        host = f"198.51.100.{i % 250 + 1}"
        lines.append(f"    iif wan ip daddr {host} tcp dport {rng.randint(1, 65535)} accept")
    lines += ["    iif lan tcp dport 443 accept", "}"]
    return "\n".join(lines) + "\n"


def bench_new_flows(args: argparse.Namespace) -> dict[int, float]:
    syns = [craft.tcp(f"{CLIENT_NET}{2 + i % 200}", SERVER, 10000 + i % 50000, 443, "S")
            for i in range(args.packets // 4)]
    results = {}
    for count in (10, 1000, 10000):
        engine = Engine(load_ruleset(rules_file(generated_rules(count))),
                        conntrack_limit=10_000_000)
        results[count] = rate(engine, syns)
    return results


def replay_capture(args: argparse.Namespace) -> tuple[Path, int]:
    """A capture of 1,000 masqueraded TCP flows (stateful-web.fw masquerades: the server
    answers the firewall's outside address): handshakes, then data and ACKs interleaved."""
    from scapy.utils import PcapWriter

    setup, data = flow_packets(1000, max(1, args.replay_packets // 2000), masquerade=True)
    path = Path(tempfile.mkdtemp()) / "bench.pcap"
    writer = PcapWriter(str(path), linktype=101)
    writer.write_header(None)
    for i, raw in enumerate((setup + data)[: args.replay_packets + len(setup)]):
        writer.write_packet(raw, sec=1000 + i // 1_000_000, usec=i % 1_000_000)
    writer.close()
    return path, len(setup) + min(len(data), args.replay_packets)


def replay_rate(path: Path, count: int, *options: str) -> float:
    """Packets per second of wall time, the whole command (start-up included)."""
    began = time.perf_counter()
    subprocess.run([sys.executable, "-m", "fw", "replay", *options,
                    str(ROOT / "rules/stateful-web.fw"), str(path)],
                   stdout=subprocess.DEVNULL, check=True)
    return count / (time.perf_counter() - began)


def bench_replay(args: argparse.Namespace) -> dict[str, float]:
    path, count = replay_capture(args)
    rates = {" ".join(mode) or "table": replay_rate(path, count, *mode)
             for mode in ([], ["--json"])}
    os.unlink(path)
    return rates


def bench_replay_workers(args: argparse.Namespace) -> list[dict[int, float]]:
    """`replay --workers N` for each N asked, one after the other on the same capture, in
    --rounds rounds (alternated: a busy minute on a shared machine then hits both counts)."""
    path, count = replay_capture(args)
    rounds = [{n: replay_rate(path, count, "--workers", str(n)) for n in args.workers}
              for _ in range(args.rounds)]
    os.unlink(path)
    return rounds


def print_replay_workers(rounds: list[dict[int, float]], base: int) -> None:
    for i, rates in enumerate(rounds, 1):
        for n, value in rates.items():
            print(f"round {i}: replay --workers {n}: {value:,.0f} packets/s "
                  f"({value / rates[base]:.2f} x --workers {base})")
    for n in rounds[0]:
        ratios = sorted(rates[n] / rates[base] for rates in rounds)
        print(f"--workers {n}: median {ratios[len(ratios) // 2]:.2f} x --workers {base} "
              f"over {len(rounds)} rounds (lowest {ratios[0]:.2f}, highest {ratios[-1]:.2f})")


def bench_memory(args: argparse.Namespace) -> float:
    from fw.engine.conntrack import ConnTable
    from fw.engine.packet import decode

    table = ConnTable(limit=args.entries + 1)
    packets = [decode(craft.udp(f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}", SERVER,
                                1024 + i % 60000, 53)) for i in range(1000)]
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(args.entries):
        pkt = packets[i % 1000]
        pkt.src, pkt.sport = 0x0A000000 + i, 1024 + i % 60000
        table.confirm(table.lookup(pkt, 0.0), 0.0)
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    return used / len(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", nargs="*",
                        default=["established", "new-flows", "replay", "memory", "nat"])
    parser.add_argument("--packets", type=int, default=400_000)
    parser.add_argument("--replay-packets", type=int, default=1_000_000)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--rounds", type=int, default=1,
                        help="replay-workers: alternate the worker counts this many times")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2],
                        help="replay-workers: the worker counts to time")
    args = parser.parse_args()
    plain = None
    if "established" in args.which or "nat" in args.which:
        plain = bench_established(args)
        print(f"established flows: {plain:,.0f} packets/s")
    if "new-flows" in args.which:
        results = bench_new_flows(args)
        for count, value in results.items():
            print(f"new flows, {count:>6} rules: {value:,.0f} packets/s")
        print(f"ratio 10,000/10 rules: {results[10000] / results[10]:.2f}")
    if "replay" in args.which:
        for mode, value in bench_replay(args).items():
            print(f"replay ({mode} output): {value:,.0f} packets/s")
    if "replay-workers" in args.which:
        print(f"load average before: {os.getloadavg()[0]:.2f}")
        print_replay_workers(bench_replay_workers(args), args.workers[0])
        print(f"load average after: {os.getloadavg()[0]:.2f} ({os.cpu_count()} CPUs)")
    if "memory" in args.which:
        print(f"conntrack: {bench_memory(args):,.0f} bytes per entry at {args.entries:,} entries")
    if "nat" in args.which:
        natted = bench_established(args, nat=True)
        print(f"established NAT'd flows: {natted:,.0f} packets/s ({natted / plain:.2f} of no NAT)")


if __name__ == "__main__":
    main()
