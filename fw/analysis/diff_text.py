"""A diff as JSON (the schema of issue 12) and as rows a table shows."""

from __future__ import annotations

from fw.analysis.diff import ALL_FLAGS, Diff, Difference
from fw.analysis.diff_example import address_text
from fw.analysis.space import TAG, Box
from fw.core import ranges
from fw.core.fields import FIELDS, MISSING, F
from fw.core.protocols import ADDRESS_BITS

SHOWN_FIELDS = tuple(name for name in FIELDS if name not in ("ct_state", "ct_status"))


def match_json(box: Box, names: dict[int, str]) -> dict:
    """The fields a region restricts, decoded: interfaces by name, addresses as strings, ports,
    flags and ICMP types as integers. A field the packets lack, or hold in full, is left out."""
    out: dict = {}
    for name in SHOWN_FIELDS:
        held = box[F[name]]
        if held == ranges.point(MISSING) or unrestricted(name, held, names):
            continue
        out[name] = decoded(name, held, names)
    return out


def unrestricted(name: str, held: tuple, names: dict[int, str]) -> bool:
    if name in ("iif", "oif"):
        return held == ranges.norm((i, i) for i in names if i != MISSING)
    if name in ("saddr", "daddr"):
        family = held[0][0] >> 128
        return held == ((family << 128, family << 128 | (1 << ADDRESS_BITS[family]) - 1),)
    if name in ("sport", "dport"):
        base = held[0][0] & ~0xFFFF
        return held == ((base, base | 0xFFFF),)
    if name == "icmp_type":
        base = held[0][0] & ~0xFF
        return held == ((base, base | 0xFF),)
    return name == "tcp_flags" and held == ALL_FLAGS


def decoded(name: str, held: tuple, names: dict[int, str]) -> list:
    if name in ("iif", "oif"):
        return [[names.get(i, str(i))] * 2 for lo, hi in held for i in range(lo, hi + 1)]
    if name in ("saddr", "daddr"):
        return [[address_text(lo), address_text(hi)] for lo, hi in held]
    mask = {"sport": 0xFFFF, "dport": 0xFFFF, "icmp_type": 0xFF}.get(name)
    if mask is None:
        return [[lo, hi] for lo, hi in held]
    return [[lo & mask, hi & mask] for lo, hi in held]


def difference_json(d: Difference, names: dict[int, str]) -> dict:
    out = {"chain": d.chain, "ct_state": None if d.ct_state is None else str(d.ct_state),
           "example": d.example,
           "a": {"verdict": d.a.verdict, "rule": d.a.ref()},
           "b": {"verdict": d.b.verdict, "rule": d.b.ref()},
           "match": match_json(d.box, names)}
    if d.after:
        out["after"] = list(d.after)
    return out


def diff_json(result: Diff, path_a: str, path_b: str) -> dict:
    names = {v: k for k, v in result.ifaces.items()}
    return {"a": path_a, "b": path_b, "equivalent": result.equivalent,
            "differences": [difference_json(d, names) for d in result.differences],
            "summary": {"regions": len(result.differences),
                        "tcp_ports": ranges.count(result.ports(6)),
                        "udp_ports": ranges.count(result.ports(17))}}


def match_text(box: Box, names: dict[int, str]) -> str:
    """The region in a line: `proto 6, dport 80-443, saddr 198.51.100.0-198.51.100.255`."""
    parts = []
    for name, values in match_json((*box[:TAG], None), names).items():
        shown = [str(lo) if lo == hi else f"{lo}-{hi}" for lo, hi in values[:4]]
        more = f" (+{len(values) - 4})" if len(values) > 4 else ""
        parts.append(f"{name} {','.join(shown)}{more}")
    return ", ".join(parts) or "every packet"
