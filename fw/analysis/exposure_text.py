"""Exposure as text and JSON: port ranges, prefixes, ICMP type names, the report's rows."""

from __future__ import annotations

import ipaddress

from fw.analysis.exposure import ClassExposure, Exposure, ForwardUse
from fw.core import ranges
from fw.core.fields import decode_low
from fw.core.icmp_types import type_name
from fw.core.protocols import LINK_CONTROL_ICMPV6
from fw.core.ranges import Ranges
from fw.core.text import rule_ref


def port_ranges_text(held: Ranges) -> list[str]:
    return [str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in held]


def address_ranges_text(family: int, held: Ranges) -> list[str]:
    """Prefixes where a range is one, `a-b` otherwise; the whole family is `0.0.0.0/0`/`::/0`."""
    make = ipaddress.IPv4Address if family == 4 else ipaddress.IPv6Address
    out = []
    for lo, hi in held:
        first, last = make(lo), make(hi)
        nets = list(ipaddress.summarize_address_range(first, last))
        if len(nets) > 1:
            out.append(f"{first}-{last}")
        else:
            out.append(str(first) if lo == hi else str(nets[0]))
    return out


def inside_text(exposure: Exposure, family: int, held: Ranges) -> list[str]:
    """Exposed inside addresses; an inside prefix exposed but for the firewall's own address in
    it (which packets reach through `input`, never `forward`) is shown whole (when the
    addresses on both sides of it are exposed: one host next to it stays one host)."""
    base = family << 128
    fill = []
    for lo, hi in exposure.sides.excluded:
        value = lo - base
        if lo == hi and lo >> 128 == family and (
                ranges.contains(held, value - 1) and ranges.contains(held, value + 1)):
            fill.append((value, value))
    return address_ranges_text(family, ranges.union(held, ranges.norm(fill)))


ALL_TYPES = {4: ((0, 255),),
             6: ranges.sub(((0, 255),), ranges.norm((t, t) for t in LINK_CONTROL_ICMPV6))}


def icmp_types_text(types: dict[int, Ranges]) -> list[str]:
    """Names; `icmp any` / `icmpv6 any` for every type (ICMPv6: every one the engine filters)."""
    out = []
    for fam, held in types.items():
        word = "icmp" if fam == 4 else "icmpv6"
        if held == ALL_TYPES[fam]:
            out.append(f"{word} any")
            continue
        for lo, hi in held:
            if hi - lo > 8:
                out.append(f"{word} {lo}-{hi}")
            else:
                out.extend(f"{word} {type_name(fam, t)}" for t in range(lo, hi + 1))
    return out


def forward_target(rule) -> str:
    """Where a dnat rule sends: `A[:P]`, or its pool, `{ A, B:P } :PORT method`."""
    pool = rule.pool
    if pool is None:
        return str(rule.to_addr) + (f":{rule.to_ports.lo}" if rule.to_ports is not None else "")
    port = f":{pool.port}" if pool.port is not None else ""
    return "{ " + ", ".join(map(str, pool.members)) + f" }}{port} {pool.method}"


def forward_json(use: ForwardUse) -> dict:
    rule = use.rule
    out = {"rule": rule_ref(rule), "addressed_to": address_ranges_text(4, decode_low(
        use.daddr, 32)), "ports": port_ranges_text(use.dport), "to": forward_target(rule)}
    if rule.pool is not None:
        out["pool"] = [str(m) for m in rule.pool.members]
    return out


def class_json(exposure: Exposure, c: ClassExposure) -> dict:
    out: dict = {"count": c.count}
    if c.name == "icmp":
        out["types"] = icmp_types_text(c.types)
    else:
        out["ranges"] = port_ranges_text(c.ports)
    out["addresses"] = [a for f, r in c.addresses.items() for a in inside_text(exposure, f, r)]
    out["sources"] = [a for f, r in c.sources.items() for a in address_ranges_text(f, r)]
    if c.name != "icmp":
        out["source_ports"] = port_ranges_text(c.source_ports)
        out["ephemeral_share"] = round(c.ephemeral_share(), 6)
    out["forwards"] = [forward_json(u) for _, u in sorted(c.forwards.items())]
    return out


def exposure_json(exposure: Exposure) -> dict:
    return {name: class_json(exposure, c) for name, c in exposure.classes().items()}
