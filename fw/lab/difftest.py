"""The differential test: the same conversations through the engine and through Linux.

The kernel side is the default lab (fw/lab/netns.py) with the exported rule set loaded in the
firewall namespace; every packet is sent as an Ethernet frame on the sending host's interface
(AF_PACKET, so no stack of ours touches it) and looked for on the other hosts' interfaces with
AF_PACKET receive sockets, before their stacks. The hosts' stacks are silenced with a drop-all nft
table (neighbour discovery and ARP excepted), so they add no packets of their own. Each packet
carries a tag the firewall never changes (the IPv4 identification, the IPv6 flow label), which
says which sent packet a received one is. conntrack is flushed between conversations.

The engine side is `Engine` in process, with a clock advanced 10 ms per packet. Replies are
built from the engine's NAT view (where the engine says the opener appears), so a kernel that
translated otherwise shows up as a disagreement, not as a different conversation.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import random
import select
import socket
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from fw import craft
from fw.dsl import load_ruleset
from fw.engine.checksum import internet_checksum
from fw.engine.engine import Engine
from fw.engine.nat import null_binding_range
from fw.engine.packet import Packet, decode
from fw.engine.routing import default_routing
from fw.export.nft import to_nft
from fw.lab import netns as labns
from fw.lab.difftest_gen import (
    DNAT_PORTS,
    FW_WAN,
    INSIDE,
    OUTSIDE,
    Conversation,
    Step,
    conversation,
    rule_text,
)
from fw.lab.topology import default_topology
from fw.model import RuleSet

HOSTS = {name: (iface, v4, v6) for name, iface, v4, v6 in INSIDE + OUTSIDE}
OOW = 0x40000000  # far outside any window
CONVERSATIONS_PER_RULESET = 10
PROFILES = {  # the kernel's conntrack sysctls, and the engine options that mean the same
    "default": ({"nf_conntrack_tcp_loose": 1, "nf_conntrack_tcp_be_liberal": 0},
                {"tcp_loose": True, "liberal": False}),
    "strict-loose0-liberal1": ({"nf_conntrack_tcp_loose": 0, "nf_conntrack_tcp_be_liberal": 1},
                               {"tcp_loose": False, "liberal": True}),
}


# -- one packet, one outcome ------------------------------------------------------------------


def tagged(raw: bytes, tag: int) -> bytes:
    """The packet with `tag` in the IPv4 identification (header checksum fixed) or the IPv6
    flow label: fields forwarding and NAT leave alone and no transport checksum covers."""
    buf = bytearray(raw)
    if buf[0] >> 4 == 4:
        buf[4:6] = (tag & 0xFFFF).to_bytes(2)
        buf[10:12] = b"\0\0"
        ihl = (buf[0] & 15) * 4
        buf[10:12] = internet_checksum(bytes(buf[:ihl])).to_bytes(2)
    else:
        first = int.from_bytes(buf[:4]) & ~0xFFFFF | (tag & 0xFFFFF)
        buf[:4] = first.to_bytes(4)
    return bytes(buf)


def tag_of(raw: bytes) -> tuple[int, int, int] | None:
    """(family, tag, fragment offset) of a received IP packet."""
    if len(raw) < 40 and raw[:1] and raw[0] >> 4 == 6:
        return None
    if len(raw) >= 20 and raw[0] >> 4 == 4:
        return 4, int.from_bytes(raw[4:6]), int.from_bytes(raw[6:8]) & 0x1FFF
    if len(raw) >= 40 and raw[0] >> 4 == 6:
        return 6, int.from_bytes(raw[:4]) & 0xFFFFF, 0
    return None


def header(pkt: Packet) -> tuple:
    """What NAT may change: the addresses and ports (ICMP id) on the wire."""
    sport = pkt.sport if pkt.sport >= 0 else pkt.icmp_id
    return (pkt.src, sport, pkt.dst, pkt.dport)


def bad_checksum(raw: bytes) -> bytes:
    """The same packet with its transport checksum wrong (never 0: for UDP that means none)."""
    pkt = decode(raw)
    off = pkt.l4_offset + (16 if pkt.proto == 6 else 6 if pkt.proto == 17 else 2)
    buf = bytearray(raw)
    value = int.from_bytes(buf[off:off + 2]) ^ 0x1234
    buf[off:off + 2] = (value or 0x4321).to_bytes(2)
    return bytes(buf)


@dataclass
class Sent:
    """One packet of a conversation and what each side did with it."""

    label: str
    side: int
    raw: bytes
    key: tuple[int, int, int]
    engine: tuple | None = None  # header as it left the engine, None if it did not
    kernel: tuple | None = None  # header as it reached the far host, None if it did not
    note: str = ""

    @property
    def agrees(self) -> bool:
        """The same outcome; a source port both changed without a rule asking (a tuple clash:
        Linux draws it at random) counts as the same when both come from Linux's range."""
        engine, kernel = self.engine, self.kernel
        if engine == kernel:
            return True
        if engine is None or kernel is None or engine[::2] != kernel[::2] or engine[3] != kernel[3]:
            return False
        sent = header(decode(self.raw))[1]
        lo, hi = null_binding_range(sent)
        ports = (engine[1], kernel[1])
        return sent not in ports and all(lo <= port <= hi for port in ports)


# -- building a conversation with the engine ------------------------------------------------


@dataclass
class Realiser:
    """Turns a conversation's steps into packets, judging each with the engine as it goes:
    side 1 answers where the engine says side 0 appears."""

    conv: Conversation
    engine: Engine
    next_tag: Iterator[int]
    now: float = 1000.0
    seq: list[int] = field(default_factory=lambda: [1000, 50000])
    isn: list[int | None] = field(default_factory=lambda: [None, None])
    last: list[tuple | None] = field(default_factory=lambda: [None, None])
    echo_seq: int = 0
    delivered: bytes | None = None  # side 0's last packet as side 1 got it (for ICMP errors)
    view: list[tuple[str, int]] = field(default_factory=list)  # where each side sends to

    def __post_init__(self) -> None:
        conv = self.conv
        self.ends = [(conv.opener[2], conv.ports[0]), self.real_other()]
        self.view = [(conv.other[2], conv.ports[1]), self.ends[0]]
        if conv.family == 4 and conv.direction == "out" and self.engine.ruleset.nat:
            self.view[1] = (FW_WAN[4], conv.ports[0])  # masquerade, port kept (engine's view)

    def real_other(self) -> tuple[str, int]:
        conv = self.conv
        if conv.direction != "dnat":
            return conv.other[2], conv.ports[1]
        return HOSTS["web"][1], DNAT_PORTS[conv.proto][1]

    def iface(self, side: int) -> str:
        return (self.conv.opener if side == 0 else self.conv.other)[1]

    def run(self) -> list[Sent]:
        sent: list[Sent] = []
        for step in self.conv.steps:
            tag = next(self.next_tag)  # the fragments of one datagram share theirs
            sent += [self.judge(step, tagged(raw, tag)) for raw in self.build(step)]
        return sent

    def judge(self, step: Step, raw: bytes) -> Sent:
        self.now += 0.01
        self.engine.expire(self.now)
        decision = self.engine.process(raw, iif=self.iface(step.side), now=self.now)
        out = None
        if decision.accepted and decision.chain == "forward":
            leaving = decision.packet or raw
            out = header(decode(leaving))
            if step.side == 0:
                self.delivered = leaving
                pkt = decode(leaving)
                if pkt.proto in (6, 17) and pkt.sport >= 0:
                    self.view[1] = (str(_addr(pkt.family, pkt.src)), pkt.sport)
        key = tag_of(raw)
        assert key is not None
        return Sent(step.label, step.side, raw, key, engine=out)

    # -- packets ----------------------------------------------------------------------

    def build(self, step: Step) -> list[bytes]:
        kind = step.kind
        if kind == "udp":
            raws = [self.udp(step.side, b"q" * 20)]
        elif kind == "frag":
            raws = self.fragments(step.side)
        elif kind in ("echo", "timestamp"):
            raws = [self.query(step.side, kind)]
        elif kind == "error":
            raws = [self.error(step.side, self.delivered)]
        elif kind == "error-unknown":
            raws = [self.error(step.side, None)]
        else:
            raws = [self.tcp(step)]
        if step.tweak == "badsum":
            raws = [bad_checksum(r) for r in raws]
        return raws

    def addrs(self, side: int) -> tuple[str, int, str, int]:
        src, sport = self.ends[side]
        dst, dport = self.view[side]
        return src, sport, dst, dport

    def tcp(self, step: Step) -> bytes:
        side, flags, tweak = step.side, step.kind, step.tweak
        if tweak == "retrans" and self.last[side] is not None:
            flags, seq, ack, data = self.last[side]
        else:
            if "S" in flags and self.isn[side] is not None:
                seq = self.isn[side]  # a SYN again (simultaneous open): the same ISN
            else:
                seq = self.seq[side]
                if "S" in flags:
                    self.isn[side] = seq
            ack = self.seq[1 - side] if "A" in flags else 0
            data = step.data
            advance = data + ("S" in flags and seq == self.seq[side]) + ("F" in flags)
            if tweak in ("seq-oow", "rst-oow"):
                seq = (seq + OOW) & 0xFFFFFFFF
                advance = 0
            if tweak == "ack-oow":
                ack = (ack + OOW) & 0xFFFFFFFF
            self.seq[side] = (self.seq[side] + advance) & 0xFFFFFFFF
            self.last[side] = (flags, seq, ack, data)
        src, sport, dst, dport = self.addrs(side)
        return craft.tcp(src, dst, sport, dport, flags, seq=seq, ack=ack, payload=b"x" * data)

    def udp(self, side: int, payload: bytes) -> bytes:
        src, sport, dst, dport = self.addrs(side)
        return craft.udp(src, dst, sport, dport, payload)

    def fragments(self, side: int) -> list[bytes]:
        """A 48-byte UDP datagram in two IPv4 fragments (24 bytes each), in order."""
        src, sport, dst, dport = self.addrs(side)
        segment = craft.udp(src, dst, sport, dport, b"f" * 40)[20:]
        first = craft.ipv4(src, dst, 17, segment[:24], flags_frag=0x2000)
        second = craft.ipv4(src, dst, 17, segment[24:], flags_frag=3)
        return [first, second]

    def query(self, side: int, kind: str) -> bytes:
        src, _, dst, _ = self.addrs(side)
        ident = self.conv.ports[0]
        self.echo_seq += side == 0
        if kind == "echo":
            return craft.icmp_echo(src, dst, 8 if side == 0 else 0, ident, self.echo_seq)
        rest = ident << 16 | self.echo_seq
        return craft.icmp(src, dst, 13 if side == 0 else 14, 0, b"\0" * 12, rest)

    def error(self, side: int, quoted: bytes | None) -> bytes:
        """Port unreachable quoting `quoted` (as its sender's peer got it), or a packet of a
        flow nobody opened."""
        src, sport, dst, dport = self.addrs(side)
        if quoted is None:
            if self.conv.proto == "udp":
                quoted = craft.udp(dst, src, dport + 1, sport + 1, b"z")
            else:
                quoted = craft.tcp(dst, src, dport + 1, sport + 1, "PA", seq=7, ack=9)
        inner = decode(quoted)
        dst = str(_addr(inner.family, inner.src))
        quote = quoted[: (inner.l4_offset if inner.l4_offset > 0 else 20) + 8]
        if self.conv.family == 4:
            return craft.icmp(src, dst, 3, 3, quote)
        return craft.icmp(src, dst, 1, 4, quote)


def _addr(family: int, value: int):
    import ipaddress

    return ipaddress.IPv4Address(value) if family == 4 else ipaddress.IPv6Address(value)


# -- the kernel ---------------------------------------------------------------------------

_CLONE_NEWNET = 0x40000000
_ETH_P_ALL = 0x0003
_PACKET_OUTGOING = 4
GUARD = """table inet difftest_guard {
  chain in { type filter hook input priority -400; policy drop;
    icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept; }
  chain out { type filter hook output priority -400; policy drop;
    icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert } accept; }
}
"""


@contextlib.contextmanager
def in_namespace(ns: str) -> Iterator[None]:
    """This thread inside network namespace `ns` for the block (sockets made there stay)."""
    libc = ctypes.CDLL(None, use_errno=True)
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(str(labns.NETNS_DIR / ns), os.O_RDONLY)
    try:
        if libc.setns(target, _CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {ns}")
        try:
            yield
        finally:
            if libc.setns(home, _CLONE_NEWNET) != 0:
                raise OSError(ctypes.get_errno(), "setns back")
    finally:
        os.close(home)
        os.close(target)


class Kernel:
    """The default lab with silenced hosts and one raw socket per host interface."""

    def __init__(self, name: str, sysctls: dict[str, int]) -> None:
        self.name = name
        self.lab = labns.up(default_topology(), name)
        self.socks: dict[str, socket.socket] = {}
        try:
            self.setup(sysctls)
        except BaseException:
            self.close()
            raise

    def setup(self, sysctls: dict[str, int]) -> None:
        for host in HOSTS:
            self.nft(host, GUARD)
            with in_namespace(self.lab.ns(host)):
                s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(_ETH_P_ALL))
                s.bind(("eth0", 0))
                s.setblocking(False)
                self.socks[host] = s
        self.macs = {h: self.mac(h, "eth0") for h in HOSTS}
        self.fw_macs = {i: self.mac(self.lab.topology.firewall.host, i) for i in ("lan", "wan")}
        args = [f"net.netfilter.{k}={v}" for k, v in sysctls.items()]
        self.run(self.lab.topology.firewall.host, ["sysctl", "-q", "-w", *args])

    def run(self, host: str, argv: list[str], stdin: str | None = None) -> str:
        res = subprocess.run(["ip", "netns", "exec", self.lab.ns(host), *argv], input=stdin,
                             capture_output=True, text=True, timeout=30)
        if res.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} in {host}: {res.stderr.strip()}")
        return res.stdout

    def nft(self, host: str, script: str) -> None:
        self.run(host, ["nft", "-f", "-"], stdin=script)

    def mac(self, host: str, iface: str) -> bytes:
        info = json.loads(self.run(host, ["ip", "-j", "link", "show", iface]))
        return bytes.fromhex(info[0]["address"].replace(":", ""))

    def load(self, script: str) -> None:
        self.nft(self.lab.topology.firewall.host, script)

    def flush(self) -> None:
        """Forget every connection (and so every NAT binding) before the next conversation."""
        self.run(self.lab.topology.firewall.host, ["conntrack", "-F"])

    def drain(self) -> None:
        for s in self.socks.values():
            with contextlib.suppress(BlockingIOError):
                while True:
                    s.recv(65536)

    def send(self, host: str, raw: bytes) -> None:
        iface = HOSTS[host][0]
        ethertype = b"\x08\x00" if raw[0] >> 4 == 4 else b"\x86\xdd"
        self.socks[host].send(self.fw_macs[iface] + self.macs[host] + ethertype + raw)

    def collect(self, seen: dict, sender: str, want: tuple | None, timeout: float) -> None:
        """Record tagged packets reaching hosts other than `sender` until `want` has arrived
        or `timeout` has passed."""
        deadline = time.monotonic() + timeout
        by_fd = {s.fileno(): (h, s) for h, s in self.socks.items()}
        while want is None or want not in seen:
            left = deadline - time.monotonic()
            if left <= 0:
                return
            ready, _, _ = select.select(list(by_fd), [], [], left)
            for fd in ready:
                host, s = by_fd[fd]
                with contextlib.suppress(BlockingIOError):
                    while True:
                        frame, addr = s.recvfrom(65536)
                        if addr[2] == _PACKET_OUTGOING or host == sender:
                            continue
                        ip = frame[14:]
                        key = tag_of(ip)
                        if key is not None and frame[12:14] in (b"\x08\x00", b"\x86\xdd"):
                            seen.setdefault(key, ip)

    def close(self) -> None:
        for s in self.socks.values():
            s.close()
        labns.down(self.name)


def kernel_outcomes(kernel: Kernel, conv: Conversation, sent: list[Sent], wait: float) -> None:
    kernel.flush()
    kernel.drain()
    seen: dict = {}
    hosts = [conv.opener[0], "web" if conv.direction == "dnat" else conv.other[0]]
    for item in sent:
        sender = hosts[item.side]
        kernel.send(sender, item.raw)
        kernel.collect(seen, sender, item.key, wait)
    kernel.collect(seen, "", None, wait)
    for item in sent:
        ip = seen.get(item.key)
        if ip is not None and decode(ip).proto == decode(item.raw).proto:
            item.kernel = header(decode(ip))


# -- a run --------------------------------------------------------------------------------


@dataclass
class Result:
    conversations: int = 0
    packets: int = 0
    agree: int = 0
    conv_agree: int = 0
    by_label: Counter = field(default_factory=Counter)
    label_agree: Counter = field(default_factory=Counter)
    by_shape: Counter = field(default_factory=Counter)
    shape_agree: Counter = field(default_factory=Counter)
    disagreements: list[dict] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # rule sets whose export nft refused

    def add(self, conv: Conversation, rules: str, sent: list[Sent]) -> None:
        self.conversations += 1
        shape = f"{conv.proto}:{conv.shape}"
        self.by_shape[shape] += 1
        ok = all(s.agrees for s in sent)
        self.conv_agree += ok
        self.shape_agree[shape] += ok
        for s in sent:
            self.packets += 1
            self.agree += s.agrees
            self.by_label[s.label] += 1
            self.label_agree[s.label] += s.agrees
        if not ok:
            self.disagreements.append(describe(conv, rules, sent))


# Deliberate differences (docs/fidelity.md): predicates on a disagreeing conversation's
# description. Each one names why the engine does not follow the kernel there.
# None at the moment: the tuple clash that was one is now followed (Nat.unique_source).
DELIBERATE: dict = {}


def deliberate(disagreement: dict) -> str | None:
    """The documented reason a disagreement is allowed, or None."""
    for reason, applies in DELIBERATE.items():
        if applies(disagreement):
            return reason
    return None


def describe(conv: Conversation, rules: str, sent: list[Sent]) -> dict:
    def fmt(h):
        return None if h is None else [str(_addr(4 if h[0] < 2**32 and conv.family == 4 else 6,
                                                 h[0])), h[1],
                                       str(_addr(4 if conv.family == 4 else 6, h[2])), h[3]]
    return {
        "shape": f"{conv.proto}:{conv.shape}", "family": conv.family,
        "direction": conv.direction, "rules": rules,
        "packets": [{"label": s.label, "side": s.side, "flags": _flags(s.raw),
                     "sent": fmt(header(decode(s.raw))), "engine": fmt(s.engine),
                     "kernel": fmt(s.kernel), "agree": s.agrees}
                    for s in sent],
    }


def _flags(raw: bytes) -> str:
    pkt = decode(raw)
    if pkt.proto != 6:
        return f"proto {pkt.proto}" + (f" type {pkt.icmp_type}" if pkt.icmp_type >= 0 else "")
    return "".join(letter for letter, bit in craft.TCP_FLAG_LETTERS.items()
                   if pkt.tcp_flags & bit) or "-"


def load_text(text: str) -> RuleSet:
    with tempfile.NamedTemporaryFile("w", suffix=".fw", delete=False) as f:
        f.write(text)
    try:
        return load_ruleset(f.name)
    finally:
        Path(f.name).unlink()


def tags() -> Iterator[int]:
    n = 0
    while True:
        n = n % 0xFFFF + 1
        yield n


def run(seed: int, count: int, profile: str = "default", *, engine_options: dict | None = None,
        wait: float = 0.02, name: str | None = None) -> Result:
    """`count` conversations, a new random rule set every CONVERSATIONS_PER_RULESET."""
    sysctls, options = PROFILES[profile]
    options = {**options, **(engine_options or {})}
    rng = random.Random(seed)
    result = Result()
    kernel = Kernel(name or f"dt{os.getpid() % 100000}", sysctls)
    next_tag = tags()
    try:
        done = 0
        while done < count:
            text = rule_text(rng)
            ruleset = load_text(text)
            try:
                kernel.load(to_nft(ruleset).text)
            except RuntimeError as exc:  # an export nft refuses: a bug to report, not to run
                result.refused.append(f"{exc}\n{text}")
                continue
            for _ in range(min(CONVERSATIONS_PER_RULESET, count - done)):
                conv = conversation(rng)
                engine = Engine(ruleset, default_routing(), seed=0, **options)
                sent = Realiser(conv, engine, next_tag).run()
                kernel_outcomes(kernel, conv, sent, wait)
                result.add(conv, text, sent)
                done += 1
    finally:
        kernel.close()
    return result


def report(result: Result) -> str:
    allowed = Counter(deliberate(d) for d in result.disagreements)
    lines = [f"conversations: {result.conv_agree}/{result.conversations} agree "
             f"({pct(result.conv_agree, result.conversations)})",
             *(f"  disagreeing, {why or 'NOT a documented difference'}: {n}"
               for why, n in sorted(allowed.items(), key=lambda x: str(x[0]))),
             f"packets:       {result.agree}/{result.packets} agree "
             f"({pct(result.agree, result.packets)})",
             f"rule sets whose export nft refused: {len(result.refused)}", "",
             "per packet class:"]
    for label in sorted(result.by_label):
        n, ok = result.by_label[label], result.label_agree[label]
        lines.append(f"  {label:24} {ok:6}/{n:<6} {pct(ok, n)}")
    lines += ["", "per conversation shape:"]
    for shape in sorted(result.by_shape):
        n, ok = result.by_shape[shape], result.shape_agree[shape]
        lines.append(f"  {shape:28} {ok:5}/{n:<5} {pct(ok, n)}")
    return "\n".join(lines)


def pct(ok: int, n: int) -> str:
    return f"{100.0 * ok / n:.1f}%" if n else "-"


__all__ = ["PROFILES", "Result", "deliberate", "report", "run"]
