"""What one sender reaches: the exposure seen from a given source address (and port).

The per-class rows of exposure.py are projections (which sources get *some* packet in, which
ports *someone* reaches). Once a flow is open (`--after`) that is not enough to check a
measurement: with address-dependent filtering 203.0.113.10 reaches 192.0.2.2:5000 and
203.0.113.66 reaches nothing, though the class's ports and sources are the same either way.
`reach_from` answers for one sender, from the accepted region itself, so `exposure --live
--after` can compare each sender it probes from with what it measured.
"""

from __future__ import annotations

import ipaddress

from fw.analysis import space
from fw.analysis.exposure import CLASS_FILTER, Exposure, family_of
from fw.core import ranges
from fw.core.fields import F, decode_low
from fw.core.ranges import Ranges


def reach_from(exposure: Exposure, name: str, saddr: str, sport: int = 0) -> Ranges:
    """The destination ports on the inside (ICMP: the types) of class `name` that a sender at
    `saddr`, sending from `sport` (ignored for ICMP), gets a packet to."""
    address = ipaddress.ip_address(saddr)
    family = address.version
    source = family << 128 | int(address)
    found: list[tuple[int, int]] = []
    for box in exposure.accepted:
        part = space.intersect(box, CLASS_FILTER[name])
        if part is None or family_of(part) != family:
            continue
        if not ranges.contains(part[F["saddr"]], source):
            continue
        if name == "icmp":
            found += decode_low(part[F["icmp_type"]], 8)
            continue
        proto = part[F["proto"]][0][0]
        if ranges.contains(part[F["sport"]], proto << 16 | sport):
            found += decode_low(part[F["dport"]], 16)
    return ranges.norm(found)
