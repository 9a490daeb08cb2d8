"""Later fragments follow their first fragment's verdict (stateful mode).

Without the kernel's defragmentation (conntrack is off in the lab, docs/design.md), later fragments
reach the engine bare: no ports, no flags. In stateful mode, as Linux's nf_defrag (which comes
with conntrack) would reunite them, the engine judges the packet once, on its first fragment, and
lets the rest share that verdict, keyed on (family, src, dst, id, proto) for 30 s (Linux's
ipfrag_time); a later fragment whose first was never seen is `invalid`. In stateless mode there
is no conntrack, so Linux does not reassemble: every fragment is judged on its own, and a later
one matches only rules that need nothing from the transport header (docs/fidelity.md).
"""

from __future__ import annotations

from collections import OrderedDict

from fw.core.protocols import ICMP, TCP, UDP
from fw.engine.checksum import rewrite_v4
from fw.engine.decision import Decision
from fw.engine.packet import Packet

FRAGMENT_TIMEOUT = 30.0
MAX_FRAGMENTED_PACKETS = 8192


def fragment_key(pkt: Packet) -> tuple[int, int, int, int, int]:
    return (pkt.family, pkt.src, pkt.dst, pkt.frag_id, pkt.proto)


class FragmentTable:
    def __init__(self, timeout: float = FRAGMENT_TIMEOUT, limit: int = MAX_FRAGMENTED_PACKETS):
        self.timeout = timeout
        self.limit = limit
        self._entries: OrderedDict[tuple, tuple[Decision, float]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._entries)

    def remember(self, key: tuple, decision: Decision, now: float) -> None:
        """Keep the first fragment's verdict (and NAT's new addresses, which the later
        fragments need too: they carry the same IP header) for the rest of the packet. The key
        is taken before NAT rewrote the first fragment's addresses."""
        self._entries[key] = (decision, now + self.timeout)
        self._entries.move_to_end(key)
        while len(self._entries) > self.limit:
            self._entries.popitem(last=False)

    def follow(self, later: Packet, now: float) -> Decision | None:
        entry = self._entries.get(fragment_key(later))
        if entry is None or entry[1] <= now:
            return None
        first = entry[0]
        verdict = "drop" if first.verdict == "reject" else first.verdict
        packet = translated_like(later, first) if verdict == "accept" else None
        return first._replace(verdict=verdict, reply=None, packet=packet, logs=(), trace=(),
                       statements=(),
                       reason=f"later fragment: follows its first fragment ({first.reason})")


    def next_expiry(self) -> float | None:
        return next(iter(self._entries.values()))[1] if self._entries else None

    def expire(self, now: float) -> None:
        while self._entries and next(iter(self._entries.values()))[1] <= now:
            self._entries.popitem(last=False)


def translated_like(later: Packet, first: Decision) -> bytes | None:
    """A later fragment of a NAT'd packet gets the first fragment's new addresses."""
    if not first.nat or later.family != 4:
        return None
    src, _sport, dst, _dport = first.nat[-1].after
    buf = bytearray(later.raw)
    rewrite_v4(buf, later, src=src, dst=dst)
    return bytes(buf)


def as_nft_reads(pkt: Packet) -> dict[str, int]:
    """The transport fields nft reads from a later IPv4 fragment judged alone (stateless
    mode): its fast payload path (nf_tables_core.c, nft_payload_fast_eval) has no fragment
    check, so the first bytes of the fragment's data stand where the header would be: ports
    at 0 and 2, TCP flags at 13, the ICMP type at 0, each where the fragment is long enough
    (a shorter one makes the slow path answer, which does check: no match). Field values are
    encoded as fw/core/fields.packet_values encodes them."""
    if pkt.family != 4 or not pkt.frag_offset:
        return {}
    raw, proto = pkt.raw, pkt.proto
    data = raw[(raw[0] & 15) << 2 : pkt.length]
    values = {}
    if proto in (TCP, UDP):
        if len(data) >= 2:
            values["sport"] = proto << 16 | int.from_bytes(data[0:2])
        if len(data) >= 4:
            values["dport"] = proto << 16 | int.from_bytes(data[2:4])
        if proto == TCP and len(data) >= 14:
            values["tcp_flags"] = data[13]
    elif proto == ICMP and data:
        values["icmp_type"] = ICMP << 8 | data[0]
    return values
