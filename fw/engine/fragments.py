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
