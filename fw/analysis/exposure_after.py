"""Exposure once a flow is open: what the state left by an inside host's packets lets in.

`fwlab exposure FILE --after 'udp 192.0.2.2:5000 -> 203.0.113.10:3478'` replays the packets
through the engine (as `explain --after` does) and reads the state they left, then adds to the
unsolicited packets of exposure.py those that state lets through, as boxes in the forward
chain's view (after translation):

- the **replies** of each connection: from its remote endpoint to the inside endpoint, `ct state
  established`; a TCP reply's flags are those the engine's tracker takes as `established` in the
  state the connection is in (after a bare SYN: a SYN/ACK, a bare SYN, since a simultaneous open
  is a reply, an ACK or a RST, but not a FIN), found by trying each flag value on a fresh replay;
- through each NAT **mapping** (RFC 4787) the connection made, new connections from the outside
  to the mapped address and port, `ct state related`, translated to the inside endpoint, from
  the senders its *filtering* admits: endpoint-independent, anyone from any port;
  address-dependent, only addresses the inside endpoint has sent to, from any port;
  address-and-port-dependent, only the exact endpoints it has sent to (which are then the
  replies themselves). A `dnat` rule that matches such a packet takes it first, as in the engine;
  a TCP segment opens nothing unless it is a SYN.

Without NAT (or in IPv6) only the replies get in: a stateful firewall is address-and-port
dependent by nature. A stateless file keeps no state: `--after` changes nothing.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from ipaddress import IPv4Address, IPv6Address

from fw.analysis import space
from fw.analysis.space import Box, RuleBox
from fw.core import ranges
from fw.core.fields import CT_STATE_ID, MISSING, F
from fw.core.protocols import TCP, UDP, opens_tcp_connection
from fw.core.ranges import Ranges
from fw.core.vocab import CtState, NatBehaviour
from fw.craft import tcp
from fw.engine.engine import Engine
from fw.engine.routing import Routing
from fw.engine.tcp_window import DIR_WORDS, END
from fw.model import RuleSet
from fw.packetspec import parse_packet

NONE = ranges.point(MISSING)
STEP = 0.001  # seconds between the packets, as explain --after spaces them
REPLY_AT = 1.0  # when a tried reply arrives: after the packets, well within every timeout
OPENING_FLAGS = ranges.norm((f, f) for f in range(256) if opens_tcp_connection(f))


def state_after(ruleset: RuleSet, routing: Routing, packets: Sequence[str]) -> Engine:
    """A fresh engine that has seen the packets, in order (one millisecond apart)."""
    engine = Engine(ruleset, routing, seed=0)
    for i, text in enumerate(packets):
        engine.process(parse_packet(text), now=i * STEP)
    return engine


def reply_flags(fresh: Callable[[], Engine], conns: list) -> dict[tuple, Ranges]:
    """The flag values a reply of each TCP connection may carry and be `established`, by the
    connection's original tuple: each value tried on a fresh replay of the `--after` packets
    (the tracker's table decides, with the sequence numbers the connection expects next). One
    replay per value serves every connection: their replies touch different entries."""
    replies = {conn.orig: reply_of(conn) for conn in conns}
    taken: dict[tuple, list] = {key: [] for key in replies}
    for flags in range(256 if replies else 0):  # no TCP connection: nothing to replay
        engine = fresh()
        for key, build in replies.items():
            if engine.process(build(flags), now=REPLY_AT).ct_state == CtState.ESTABLISHED:
                taken[key].append((flags, flags))
    return {key: ranges.norm(values) for key, values in taken.items()}


def reply_of(conn) -> Callable[[int], bytes]:
    """A reply of `conn` as it arrives, with the given flags and the next sequence numbers."""
    _, src, sport, dst, dport = conn.reply
    saddr, daddr = address(conn.family, src), address(conn.family, dst)
    seq, ack = conn.tcp[DIR_WORDS + END], conn.tcp[END]
    return lambda flags: tcp(saddr, daddr, sport, dport, flags, seq=seq, ack=ack)


def address(family: int, value: int) -> IPv4Address | IPv6Address:
    return IPv6Address(value) if family == 6 else IPv4Address(value)


def opened_boxes(fresh: Callable[[], Engine], outside: int, inside_oif: dict[int, Ranges],
                 dnat_rules: Sequence[RuleBox]) -> list[Box]:
    """What the state of the engine `fresh()` returns lets in from the outside interface, in
    the forward chain's view. `inside_oif` maps an outgoing interface id to the inside
    addresses routed through it."""
    engine = fresh()
    if not engine.stateful:
        return []
    out: list[Box] = []
    flags_of = reply_flags(fresh, [c for c in engine.conntrack if c.orig[0] == TCP])
    for conn in engine.conntrack:
        proto, src, sport, _, _ = conn.orig
        if proto not in (TCP, UDP):
            continue
        inside = conn.family << 128 | src
        oif = next((i for i, addrs in inside_oif.items() if ranges.contains(addrs, inside)), None)
        if oif is None:
            continue
        _, rsrc, rsport, _, _ = conn.reply
        flags = flags_of[conn.orig] if proto == TCP else NONE
        reply = box(proto, outside, oif, conn.family << 128 | rsrc, proto << 16 | rsport,
                    inside, proto << 16 | sport, CtState.ESTABLISHED, flags=flags)
        out.append(reply)
        mapping = conn.nat.mapping if conn.nat is not None else None
        if mapping is not None and mapping.inside == (src, sport):
            out += through_mapping(mapping, reply, dnat_rules)
    return unique(out)


def box(proto: int, iif: int, oif: int, saddr: int, sport: int, daddr: int, dport: int,
        state: str, saddrs: Ranges | None = None, sports: Ranges | None = None,
        flags: Ranges | None = None) -> Box:
    return space.make_box(
        iif=ranges.point(iif), oif=ranges.point(oif),
        saddr=saddrs if saddrs is not None else ranges.point(saddr),
        daddr=ranges.point(daddr), proto=ranges.point(proto),
        sport=sports if sports is not None else ranges.point(sport), dport=ranges.point(dport),
        tcp_flags=(flags if flags is not None else OPENING_FLAGS) if proto == TCP else NONE,
        icmp_type=NONE, ct_state=ranges.point(CT_STATE_ID[state]))


def senders(mapping, proto: int) -> list[tuple[Ranges, Ranges]]:
    """(source addresses, source ports) the mapping's filtering admits, encoded (IPv4)."""
    v4 = ((4 << 128, 4 << 128 | 0xFFFFFFFF),)
    ports = ((proto << 16, proto << 16 | 0xFFFF),)
    if mapping.filtering == NatBehaviour.ENDPOINT_INDEPENDENT:
        return [(v4, ports)]
    if mapping.filtering == NatBehaviour.ADDRESS_DEPENDENT:
        return [(ranges.norm((4 << 128 | a,) * 2 for a, _ in mapping.remotes), ports)]
    return [(ranges.point(4 << 128 | a), ranges.point(proto << 16 | p))
            for a, p in sorted(mapping.remotes)]


def through_mapping(mapping, reply: Box, dnat_rules: Sequence[RuleBox]) -> list[Box]:
    """New connections through the mapping (related), addressed to its outside endpoint and
    translated to its inside one; not the connection's own replies, nor what dnat takes."""
    proto = mapping.proto
    (oa, op), (ia, ip) = mapping.outside, mapping.inside
    iif, oif = reply[F["iif"]][0][0], reply[F["oif"]][0][0]
    own: RuleBox = ((F["saddr"], reply[F["saddr"]]), (F["sport"], reply[F["sport"]]))
    addressed = []
    for saddrs, sports in senders(mapping, proto):
        new = box(proto, iif, MISSING, 0, 0, 4 << 128 | oa, proto << 16 | op, CtState.RELATED,
                  saddrs, sports)
        addressed += space.difference(new, own) if space.intersect(new, own) else [new]
    _, untouched = space.first_match(list(dnat_rules), addressed)
    inside = {F["daddr"]: ranges.point(4 << 128 | ia), F["dport"]: ranges.point(proto << 16 | ip),
              F["oif"]: ranges.point(oif)}
    return [tuple(inside.get(i, held) for i, held in enumerate(b)) for b in untouched]


def unique(boxes: list[Box]) -> list[Box]:
    return list(dict.fromkeys(boxes))
