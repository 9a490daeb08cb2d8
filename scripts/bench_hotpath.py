#!/usr/bin/env python3
"""The per-packet hot path of established TCP flows, piece by piece (docs/benchmarks.md).

  decode   µs per decode() of TCP/IPv4 data segments of 1,000 interleaved flows (distinct packets;
           plain 20-byte headers, and with the NOP NOP timestamp option most stacks send)
  lookup   µs per ConnTable.lookup() of those segments, decoded beforehand, strict window tracking
  memory   conntrack bytes per entry (tracemalloc) at --entries TCP connections (handshake, then
           data both ways) and --entries UDP flows (one datagram each way)

Every figure is the best of --trials runs over --packets distinct packets, loop overhead included.

Usage: .venv/bin/python scripts/bench_hotpath.py [decode lookup memory] [--packets N]
       [--entries N] [--trials N]
"""

from __future__ import annotations

import argparse
import gc
import time
import tracemalloc
from collections.abc import Callable

from fw import craft
from fw.engine.conntrack import ConnTable
from fw.engine.packet import Packet, decode

CLIENT_NET, SERVER, FLOWS = "192.0.2.", "203.0.113.10", 1000
TIMESTAMPS = b"\x01\x01\x08\x0a" + bytes(8)


def flow(f: int) -> tuple[str, int]:
    return f"{CLIENT_NET}{2 + f % 200}", 20000 + f


def handshakes(flows: int) -> list[bytes]:
    out = []
    for f in range(flows):
        client, sport = flow(f)
        out += [
            craft.tcp(client, SERVER, sport, 443, "S", seq=100),
            craft.tcp(SERVER, client, 443, sport, "SA", seq=900, ack=101),
            craft.tcp(client, SERVER, sport, 443, "A", seq=101, ack=901),
        ]
    return out


def data(flows: int, count: int, options: bytes = b"") -> list[bytes]:
    """Client data and server ACK for every flow in turn, sequence numbers moving on."""
    out = []
    for r in range(max(1, count // (2 * flows))):
        seq = 101 + r * 100
        for f in range(flows):
            client, sport = flow(f)
            out.append(
                craft.tcp(
                    client,
                    SERVER,
                    sport,
                    443,
                    "PA",
                    seq=seq,
                    ack=901,
                    payload=b"x" * 100,
                    options=options,
                )
            )
            out.append(
                craft.tcp(SERVER, client, 443, sport, "A", seq=901, ack=seq + 100, options=options)
            )
    return out


def best_us(run: Callable[[], float], trials: int) -> float:
    return min(run() for _ in range(trials))


def time_decode(packets: list[bytes]) -> float:
    gc.collect()
    began = time.perf_counter()
    for raw in packets:
        decode(raw)
    return (time.perf_counter() - began) / len(packets) * 1e6


def time_lookup(setup: list[Packet], packets: list[Packet]) -> float:
    table = ConnTable(limit=10 * FLOWS)
    for i, pkt in enumerate(setup):
        verdict = table.lookup(pkt, i * 1e-6)
        if verdict.pending:
            table.confirm(verdict, i * 1e-6)
    lookup, now = table.lookup, 1.0
    gc.collect()
    began = time.perf_counter()
    for pkt in packets:
        lookup(pkt, now)
    spent = time.perf_counter() - began
    states = {table.lookup(pkt, now).state for pkt in packets[-2 * FLOWS :]}
    assert states == {"established"}, states  # replayed: retransmissions, still in window
    return spent / len(packets) * 1e6


def _decoded(raws: list[bytes]) -> list[Packet]:
    return [decode(raw) for raw in raws]


def tcp_entry_packets() -> list[Packet]:
    """SYN, SYN/ACK, ACK, data, ACK of one connection; fields rewritten per entry."""
    client = "10.0.0.1"
    return _decoded(
        [
            craft.tcp(client, SERVER, 1024, 443, "S", seq=100),
            craft.tcp(SERVER, client, 443, 1024, "SA", seq=900, ack=101),
            craft.tcp(client, SERVER, 1024, 443, "A", seq=101, ack=901),
            craft.tcp(client, SERVER, 1024, 443, "PA", seq=101, ack=901, payload=b"x" * 100),
            craft.tcp(SERVER, client, 443, 1024, "A", seq=901, ack=201),
        ]
    )


def memory(entries: int, proto: str) -> float:
    """Bytes the table holds per entry; each entry gets its own `now` floats, as live."""
    table = ConnTable(limit=entries + 1)
    if proto == "tcp":
        packets = tcp_entry_packets()
    else:
        packets = _decoded(
            [
                craft.udp("10.0.0.1", SERVER, 1024, 53, b"q" * 30),
                craft.udp(SERVER, "10.0.0.1", 53, 1024, b"a" * 90),
            ]
        )
    lookup, confirm = table.lookup, table.confirm
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(entries):
        addr, port = 0x0A000000 + i, 1024 + i % 60000
        for n, pkt in enumerate(packets):
            if pkt.dport == 443 or pkt.dport == 53:
                pkt.src, pkt.sport = addr, port
            else:
                pkt.dst, pkt.dport = addr, port
            now = i * 1e-5 + n * 1e-6
            verdict = lookup(pkt, now)
            if verdict.pending:
                confirm(verdict, now)
    used = tracemalloc.get_traced_memory()[0] - before
    tracemalloc.stop()
    assert len(table) == entries, len(table)
    return used / len(table)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("which", nargs="*", default=["decode", "lookup", "memory"])
    parser.add_argument("--packets", type=int, default=200_000)
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--trials", type=int, default=5)
    args = parser.parse_args()
    if "decode" in args.which or "lookup" in args.which:
        plain = data(FLOWS, args.packets)
        if "decode" in args.which:
            stamped = data(FLOWS, args.packets, TIMESTAMPS)
            print(f"decode, TCP/IPv4: {best_us(lambda: time_decode(plain), args.trials):.3f} µs")
            print(
                f"decode, TCP/IPv4 + timestamps: "
                f"{best_us(lambda: time_decode(stamped), args.trials):.3f} µs"
            )
        if "lookup" in args.which:
            setup, segments = _decoded(handshakes(FLOWS)), _decoded(plain)
            us = best_us(lambda: time_lookup(setup, segments), args.trials)
            print(f"lookup, established TCP: {us:.3f} µs")
    if "memory" in args.which:
        for proto in ("tcp", "udp"):
            print(
                f"conntrack {proto.upper()}: {memory(args.entries, proto):,.0f} bytes per entry"
                f" at {args.entries:,} entries"
            )


if __name__ == "__main__":
    main()
