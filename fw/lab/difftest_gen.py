"""Random rule sets and packet conversations for the differential test against Linux.

Pure data, no I/O: `rule_text(rng)` writes a small rule file in the language (only what the
exporter handles, addressed to the default lab), `conversation(rng)` a conversation as steps
(side, kind, how to build the packet). fw/lab/difftest.py turns the steps into bytes with the
engine's NAT view and sends them through the engine and through the kernel.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

# The default lab's hosts: (name, interface of the firewall they sit behind, IPv4, IPv6).
INSIDE = [("client", "lan", "192.0.2.2", "2001:db8:1::2"),
          ("web", "lan", "192.0.2.10", "2001:db8:1::10")]
OUTSIDE = [("server", "wan", "203.0.113.10", "2001:db8:2::10"),
           ("attacker", "wan", "203.0.113.66", "2001:db8:2::66")]
FW_WAN = {4: "203.0.113.1", 6: "2001:db8:2::1"}
DNAT_PORTS = {"tcp": (8080, 80), "udp": (5353, 53)}  # outside port -> web's port (rule_text)

PORTS = [22, 53, 80, 443, 123, 5000, 8080, 1234, 40000]
CLIENT_PORTS = [40000, 41000, 33000, 50000, 1234, 700, 5000]
V4_NETS = ["192.0.2.2", "192.0.2.10", "192.0.2.0/28", "203.0.113.10", "203.0.113.0/24",
           "203.0.113.64/26", "198.51.100.0/24"]
V6_NETS = ["2001:db8:1::2", "2001:db8:1::/64", "2001:db8:2::10", "2001:db8:2::/64"]
TCP_FLAGS = ["syn", "syn,!ack", "ack", "rst", "fin", "syn,ack"]
ICMP4 = ["echo-request", "echo-reply", "destination-unreachable", "timestamp-request",
         "timestamp-reply"]
ICMP6 = ["echo-request", "echo-reply", "destination-unreachable"]
CT = ["new", "invalid", "established,related", "established", "related", "new,invalid"]


def _one_or_set(rng: random.Random, items: list) -> str:
    if rng.random() < 0.7:
        return str(rng.choice(items))
    return "{ " + ", ".join(str(x) for x in rng.sample(items, rng.randint(2, 3))) + " }"


def _neg(rng: random.Random) -> str:
    return "!= " if rng.random() < 0.2 else ""


def _match(rng: random.Random, stateful: bool) -> str:
    kinds = [
        lambda: f"iif {_neg(rng)}{rng.choice(['lan', 'wan'])}",
        lambda: f"oif {_neg(rng)}{rng.choice(['lan', 'wan'])}",
        lambda: f"ip {rng.choice(['saddr', 'daddr'])} {_neg(rng)}{_one_or_set(rng, V4_NETS)}",
        lambda: f"ip6 {rng.choice(['saddr', 'daddr'])} {_neg(rng)}{_one_or_set(rng, V6_NETS)}",
        lambda: f"proto {_neg(rng)}{_one_or_set(rng, ['tcp', 'udp', 'icmp', 'icmpv6'])}",
        lambda: (f"{rng.choice(['tcp', 'udp'])} {rng.choice(['sport', 'dport'])} "
                 f"{_neg(rng)}{_port_value(rng)}"),
        lambda: f"tcp flags {_neg(rng)}{rng.choice(TCP_FLAGS)}",
        lambda: f"icmp type {_neg(rng)}{_one_or_set(rng, ICMP4)}",
        lambda: f"icmpv6 type {_neg(rng)}{_one_or_set(rng, ICMP6)}",
    ]
    if stateful:
        kinds += [lambda: f"ct state {_neg(rng)}{rng.choice(CT)}"] * 3
    return rng.choice(kinds)()


def _port_value(rng: random.Random) -> str:
    if rng.random() < 0.2:
        lo = rng.choice(PORTS)
        return f"{lo}-{lo + rng.choice([1, 100, 10000])}"
    return _one_or_set(rng, PORTS)


def _implies(match: str) -> tuple[str | None, int | None]:
    """The protocol and family a match implies; nft refuses a rule with two of either (the
    engine's rule just never matches), so the generator never writes one."""
    word = match.split()[0]
    proto = {"tcp": "tcp", "udp": "udp", "icmp": "icmp", "icmpv6": "icmpv6"}.get(word)
    if word == "proto":  # a set or a negation conflicts with any other protocol match
        proto = match.split()[1] if "!=" not in match and "{" not in match else match
    family = {"ip": 4, "icmp": 4, "ip6": 6, "icmpv6": 6}.get(word)
    family = family or {"icmp": 4, "icmpv6": 6}.get(proto or "")
    return proto, family


def _consistent(matches: list[str]) -> bool:
    implied = [_implies(m) for m in matches]
    sets = [_proto_set(m) for m in matches]
    protos = {p for (p, _), s in zip(implied, sets, strict=True) if p and s is None}
    if any(s is not None and not protos <= s for s in sets):  # `proto { tcp, udp } tcp ...`
        return False
    families = {f for _, f in implied if f}
    fields = [_field(m) for m in matches]  # `check` refuses a field tested twice
    return len(protos) <= 1 and len(families) <= 1 and len(set(fields)) == len(fields)


def _proto_set(match: str) -> set[str] | None:
    """The protocols of a positive `proto { a, b }`: a match implying one of them may join it
    (the export leaves the set out, nft refusing the pair)."""
    if not match.startswith("proto {"):
        return None
    return {word.strip(",") for word in match[len("proto {"):].split() if word not in ("}",)}


def _field(match: str) -> str:
    """What a match tests: `ip saddr`, `tcp dport`, `ct state`, `iif`, `proto`."""
    words = match.split()
    return " ".join(words[:2]) if words[0] in ("ip", "ip6", "tcp", "udp", "icmp", "icmpv6", "ct") \
        else words[0]


def _rule(rng: random.Random, stateful: bool) -> str:
    matches = [_match(rng, stateful) for _ in range(rng.choice([0, 1, 1, 2, 2, 3]))]
    while not _consistent(matches):
        matches.pop()
    verdict = rng.choice(["accept", "accept", "accept", "drop", "reject", "counter"])
    return " ".join([*matches, verdict])


# The hosts and the firewall must find each other over IPv6 in the kernel; the engine judges
# neighbour discovery by the chains as Linux does, so every file lets it in, as a user's must.
ND_INPUT = ("input {\n    icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, "
            "nd-router-solicit, nd-router-advert } accept\n}")


def rule_text(rng: random.Random) -> str:
    """A small rule file: a few random forward rules, often the usual stateful pair first,
    NAT (masquerade and port forwards to `web`) in about half of the stateful ones."""
    stateful = rng.random() < 0.85
    lines = [f"mode {'stateful' if stateful else 'stateless'}",
             f"policy forward {rng.choice(['accept', 'drop', 'drop'])}",
             "policy input drop", "policy output accept", "", ND_INPUT, "", "forward {"]
    if stateful and rng.random() < 0.6:
        lines.append("    ct state established,related accept")
    if stateful and rng.random() < 0.4:
        lines.append("    ct state invalid drop")
    lines += ["    " + _rule(rng, stateful) for _ in range(rng.randint(1, 6))]
    lines.append("}")
    if stateful and rng.random() < 0.5:
        lines += ["", "nat {", "    oif wan masquerade"]
        if rng.random() < 0.7:
            lines.append(f"    iif wan tcp dport {DNAT_PORTS['tcp'][0]} dnat to "
                         f"192.0.2.10:{DNAT_PORTS['tcp'][1]}")
            lines.append(f"    iif wan udp dport {DNAT_PORTS['udp'][0]} dnat to "
                         f"192.0.2.10:{DNAT_PORTS['udp'][1]}")
        lines.append("}")
    return "\n".join(lines) + "\n"


# -- conversations --------------------------------------------------------------------------


@dataclass
class Step:
    """One packet: who sends it (0 the opener, 1 the other end) and what it is.

    kind: tcp flags letters for TCP ("S", "SA", "PA", ...), "udp", "echo", "timestamp",
    "error" (ICMP error quoting the last packet side 0 got through), "error-unknown",
    "frag" (a UDP datagram in two IPv4 fragments). `label` is the class the figures count it
    in; `tweak` changes it: "retrans" (the side's previous segment again), "seq-oow",
    "ack-oow", "badsum", "rst-oow".
    """

    side: int
    kind: str
    label: str
    tweak: str = ""
    data: int = 0


@dataclass
class Conversation:
    proto: str  # tcp, udp, icmp
    family: int
    direction: str  # out (inside opens), in (outside opens), dnat (outside opens to fw:port)
    opener: tuple[str, str, str]  # (host, firewall interface, address)
    other: tuple[str, str, str]
    ports: tuple[int, int]
    shape: str
    steps: list[Step] = field(default_factory=list)


HANDSHAKE = [(0, "S", "handshake"), (1, "SA", "handshake"), (0, "A", "handshake")]
DATA = [(0, "PA", "data"), (1, "A", "data"), (1, "PA", "data"), (0, "A", "data")]
CLOSE = [(0, "FA", "fin-close"), (1, "FA", "fin-close"), (0, "A", "fin-close")]
TCP_SHAPES: dict[str, list[tuple]] = {
    "full": [*HANDSHAKE, *DATA, *CLOSE],
    "retransmission": [*HANDSHAKE, (0, "PA", "retransmission"),
                       (0, "PA", "retransmission", "retrans"), (1, "A", "retransmission"),
                       (1, "A", "retransmission", "retrans"), *CLOSE],
    "out-of-window": [*HANDSHAKE, (0, "PA", "out-of-window", "seq-oow"),
                                  (1, "A", "out-of-window", "ack-oow"),
                                  (0, "PA", "data"), (1, "PA", "out-of-window", "seq-oow")],
    "rst-in-window": [*HANDSHAKE, *DATA[:2], (1, "RA", "rst-in-window"), (0, "PA", "after-rst")],
    "rst-out-of-window": [*HANDSHAKE, (0, "R", "rst-out-of-window", "rst-oow"),
                                      (0, "PA", "data"), (1, "A", "data")],
    "rst-from-opener": [*HANDSHAKE, (0, "R", "rst-in-window"), (0, "A", "after-rst"),
                                    (1, "A", "after-rst")],
    "syn-on-established": [*HANDSHAKE, *DATA[:2], (0, "S", "syn-on-established"),
                                                   (1, "A", "syn-on-established"),
                                                   (0, "PA", "data")],
    "simultaneous-open": [(0, "S", "simultaneous-open"), (1, "S", "simultaneous-open"),
                          (0, "SA", "simultaneous-open"), (1, "SA", "simultaneous-open"),
                          (0, "A", "simultaneous-open"), (1, "PA", "data")],
    "unsolicited": [(1, "SA", "unsolicited"), (1, "A", "unsolicited"), (1, "FA", "unsolicited"),
                    (1, "R", "unsolicited")],
    "mid-stream": [(0, "PA", "mid-stream"), (1, "A", "mid-stream"), (1, "PA", "mid-stream"),
                   (0, "A", "mid-stream"), (0, "FA", "mid-stream"), (1, "FA", "mid-stream")],
    "mid-stream-rst": [(0, "A", "mid-stream"), (0, "R", "mid-stream"), (0, "A", "mid-stream"),
                       (1, "A", "mid-stream")],
    "bad-checksum": [*HANDSHAKE, (0, "PA", "bad-checksum", "badsum"), (1, "A", "data"),
                                 (1, "PA", "bad-checksum", "badsum"), (0, "PA", "data")],
    "icmp-error": [*HANDSHAKE, (0, "PA", "data"), (1, "error", "icmp-error-tracked"),
                               (1, "error-unknown", "icmp-error-unknown")],
}
UDP_SHAPES: dict[str, list[tuple]] = {
    "request-reply": [(0, "udp", "udp"), (1, "udp", "udp"), (0, "udp", "udp"), (1, "udp", "udp")],
    "unsolicited": [(1, "udp", "udp-unsolicited"), (1, "udp", "udp-unsolicited")],
    "bad-checksum": [(0, "udp", "udp"), (1, "udp", "bad-checksum", "badsum"),
                     (0, "udp", "bad-checksum", "badsum"), (1, "udp", "udp")],
    "icmp-error": [(0, "udp", "udp"), (1, "error", "icmp-error-tracked"),
                   (1, "error-unknown", "icmp-error-unknown")],
    "fragments": [(0, "frag", "fragments"), (1, "udp", "udp"), (1, "frag", "fragments")],
}
ICMP_SHAPES: dict[str, list[tuple]] = {
    "echo": [(0, "echo", "icmp-echo"), (1, "echo", "icmp-echo"), (0, "echo", "icmp-echo"),
             (1, "echo", "icmp-echo")],
    "echo-unsolicited": [(1, "echo", "icmp-echo-unsolicited")],
    "timestamp": [(0, "timestamp", "icmp-query"), (1, "timestamp", "icmp-query")],
    # Linux keys a query on (type, code, id): a timestamp reply does not answer an echo request
    "query-mismatch": [(0, "echo", "icmp-query-mismatch"), (1, "timestamp", "icmp-query-mismatch"),
                       (1, "echo", "icmp-echo")],
}
V4_ONLY = {"timestamp", "fragments", "query-mismatch"}


def conversation(rng: random.Random) -> Conversation:
    proto = rng.choices(["tcp", "udp", "icmp"], [0.6, 0.25, 0.15])[0]
    family = 4 if rng.random() < 0.75 else 6
    direction = rng.choices(["out", "in", "dnat"], [0.6, 0.25, 0.15])[0]
    shapes = {"tcp": TCP_SHAPES, "udp": UDP_SHAPES, "icmp": ICMP_SHAPES}[proto]
    shape = rng.choice(sorted(shapes))
    if shape in V4_ONLY:
        family = 4
    if direction == "dnat" and (family == 6 or proto == "icmp"):
        direction = "in"
    inside = rng.choice(INSIDE)
    outside = rng.choice(OUTSIDE)
    pick = 2 if family == 4 else 3
    opener, other = (inside, outside) if direction == "out" else (outside, inside)
    dport = rng.choice(PORTS)
    if direction == "dnat":
        other = ("web", "lan", FW_WAN[4])  # addressed to the firewall, forwarded to web
        dport = DNAT_PORTS[proto][0]
    conv = Conversation(proto, family, direction, (opener[0], opener[1], opener[pick]),
                        (other[0], other[1], other[pick]), (rng.choice(CLIENT_PORTS), dport),
                        shape)
    for item in shapes[shape]:
        side, kind, label, *rest = item
        conv.steps.append(Step(side, kind, label, rest[0] if rest else "",
                               rng.choice([10, 100, 500]) if kind == "PA" else 0))
    return conv
