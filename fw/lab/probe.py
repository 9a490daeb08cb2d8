"""Live exposure probes: an attacker sends, an inside host counts what really arrived.

Two small programs, each run inside a lab namespace:

    python -m fw.lab.probe listen --iface eth0 --peer ADDR... --out FILE [--seconds N]
    python -m fw.lab.probe send --plan FILE [--rate PPS]

The listener reads every frame on the interface with a packet socket (what arrived, not what the
firewall said) and writes, per class, the (source, source port, destination, port) of what came
from the peers (ICMP: the type for the port, -1 for the source port). The sender builds the
probes with fw.craft and sends them through raw sockets at a bounded rate, so the firewall's
queue never overflows into false "filtered" results; a plan item may also be a packet ready
made (`raw`, hex): the ICMP probes, and the `--after` packets an inside host sends. Both stop
by themselves.
"""

from __future__ import annotations

import argparse
import json
import signal
import socket
import sys
import time
from collections.abc import Iterator
from ipaddress import ip_address
from pathlib import Path

from fw import craft
from fw.core.protocols import ACK, ICMP, ICMPV6, SYN, TCP, UDP
from fw.engine.packet import decode

ETH_P_ALL = 0x0003
CLASSES = ("tcp_syn", "tcp_any", "udp", "icmp")


def classes_of(proto: int, flags: int) -> tuple[str, ...]:
    """Which exposure classes one arrived packet counts for."""
    if proto == UDP:
        return ("udp",)
    if proto == TCP:
        return ("tcp_syn", "tcp_any") if flags & (SYN | ACK) == SYN else ("tcp_any",)
    if proto in (ICMP, ICMPV6):
        return ("icmp",)
    return ()


# -- listening --------------------------------------------------------------------------------


class Arrivals:
    def __init__(self, peers: set[int]) -> None:
        self.peers = peers
        self.seen: dict[str, set[tuple[str, int, str, int]]] = {name: set() for name in CLASSES}
        self.frames = 0

    def frame(self, data: bytes) -> None:
        ethertype = int.from_bytes(data[12:14], "big")
        if ethertype not in (0x0800, 0x86DD):
            return
        pkt = decode(data[14:])
        icmp = pkt.proto in (ICMP, ICMPV6)
        if pkt.src not in self.peers or (pkt.sport < 0 and not icmp):
            return
        self.frames += 1
        src, dst = str(ip_address(pkt.src)), str(ip_address(pkt.dst))
        row = (src, -1, dst, pkt.icmp_type) if icmp else (src, pkt.sport, dst, pkt.dport)
        for name in classes_of(pkt.proto, pkt.tcp_flags):
            self.seen[name].add(row)

    def as_json(self) -> dict:
        return {"frames": self.frames,
                "arrivals": {k: sorted(map(list, v)) for k, v in self.seen.items()}}


def listen(iface: str, peers: list[str], out: Path, seconds: float) -> None:
    arrivals = Arrivals({int(ip_address(p)) for p in peers})
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 32 << 20)
    sock.bind((iface, 0))
    sock.settimeout(0.2)
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *_: stop.update(now=True))
    Path(str(out) + ".ready").touch()
    end = time.monotonic() + seconds
    while not stop["now"] and time.monotonic() < end:
        try:
            data, meta = sock.recvfrom(65535)
        except TimeoutError:
            continue
        if meta[2] != socket.PACKET_OUTGOING:
            arrivals.frame(data)
    out.write_text(json.dumps(arrivals.as_json()))


# -- sending ----------------------------------------------------------------------------------


def probes(plan: list[dict]) -> Iterator[tuple[int, str, bytes]]:
    """(family, destination, packet) for every probe of the plan."""
    for item in plan:
        family = ip_address(item["dst"]).version
        if "raw" in item:
            yield family, item["dst"], bytes.fromhex(item["raw"])
            continue
        src, dst, sport = item["src"], item["dst"], item["sport"]
        for lo, hi in item["ports"]:
            for port in range(lo, hi + 1):
                if item["proto"] == "udp":
                    yield family, dst, craft.udp(src, dst, sport, port, payload=b"fwlab")
                else:
                    yield family, dst, craft.tcp(src, dst, sport, port, item["flags"],
                                                 seq=port, ack=1 if "A" in item["flags"] else 0)


def send(plan: list[dict], rate: float) -> int:
    raw = {4: socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW),
           6: socket.socket(socket.AF_INET6, socket.SOCK_RAW, socket.IPPROTO_RAW)}
    start, sent = time.monotonic(), 0
    for family, dst, packet in probes(plan):
        try:
            raw[family].sendto(packet, (dst, 0))
        except OSError:
            time.sleep(0.001)  # a full socket buffer: back off and go on
        sent += 1
        if sent % 256 == 0:
            ahead = sent / rate - (time.monotonic() - start)
            if ahead > 0:
                time.sleep(ahead)
    return sent


def main() -> None:
    parser = argparse.ArgumentParser(description="fwlab live exposure probes")
    sub = parser.add_subparsers(dest="command", required=True)
    p_listen = sub.add_parser("listen")
    p_listen.add_argument("--iface", required=True)
    p_listen.add_argument("--peer", action="append", required=True)
    p_listen.add_argument("--out", type=Path, required=True)
    p_listen.add_argument("--seconds", type=float, default=120.0)
    p_send = sub.add_parser("send")
    p_send.add_argument("--plan", type=Path, required=True)
    p_send.add_argument("--rate", type=float, default=20000.0)
    args = parser.parse_args()
    if args.command == "listen":
        listen(args.iface, args.peer, args.out, args.seconds)
    else:
        print(json.dumps({"sent": send(json.loads(args.plan.read_text()), args.rate)}))
    sys.exit(0)


if __name__ == "__main__":
    main()
