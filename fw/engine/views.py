"""JSON-able views of the engine's state, for `status`, `conntrack` and replay summaries."""

from __future__ import annotations

from dataclasses import asdict
from functools import lru_cache
from ipaddress import IPv4Address, IPv6Address, ip_address
from typing import TYPE_CHECKING

from fw.dsl.format import PROTO_NAMES
from fw.icmp_types import type_name
from fw.model import CHAINS

if TYPE_CHECKING:
    from fw.engine.conntrack import Conn, ConnTable
    from fw.engine.engine import Engine


def rule_ref(rule) -> dict | None:
    """A rule as logs and scripts see it: chain, index, file, line, text; None is the policy."""
    if rule is None:
        return None
    span = rule.span
    return {"chain": getattr(rule, "chain", None), "index": rule.index,
            "file": span.file if span else None, "line": span.line if span else None,
            "text": rule.text or None}


def engine_status(engine: Engine) -> dict:
    compiled = engine.compiled
    return {
        "mode": compiled.ruleset.mode,
        "files": list(compiled.ruleset.files),
        "packets": asdict(engine.stats),
        "chains": {chain: chain_counters(engine, chain) for chain in CHAINS},
        "conntrack": {"entries": len(engine.conntrack), **asdict(engine.conntrack.counters),
                      "limit": engine.conntrack.limit},
        "fragments": len(engine.fragments),
    }


def chain_counters(engine: Engine, chain: str) -> dict:
    counters = engine.compiled.counters[chain]
    rules = engine.compiled.ruleset.chains[chain]
    return {
        "policy": engine.compiled.policy(chain),
        "policy_hits": counters.policy_hits,
        "policy_bytes": counters.policy_bytes,
        "rules": [
            {"line": r.span.line if r.span else None, "file": r.span.file if r.span else None,
             "text": r.text, "hits": counters.hits[r.index], "bytes": counters.bytes[r.index]}
            for r in rules
        ],
    }


def endpoint(family: int, addr: int, port: int) -> str:
    text = address_text(family or (6 if addr >> 32 else 4), addr)
    return f"[{text}]:{port}" if family == 6 else f"{text}:{port}"


def tuple_text(family: int, key: tuple) -> str:
    proto, src, sport, dst, dport = key
    if proto in (1, 58):  # ICMP echo: the 'ports' are the identifier
        return f"{address_text(family, src)} -> {address_text(family, dst)} id {sport & 0xFFFF}"
    return f"{endpoint(family, src, sport)} -> {endpoint(family, dst, dport)}"


def conn_row(conn: Conn, now: float) -> dict:
    return {
        "id": conn.id,
        "proto": PROTO_NAMES.get(conn.proto, str(conn.proto)),
        "orig": tuple_text(conn.family, conn.orig),
        "reply": tuple_text(conn.family, conn.reply),
        "state": conn.state_name,
        "assured": conn.assured,
        "expires_in": round(conn.expires - now, 3),
        "packets": [conn.orig_packets, conn.reply_packets],
        "bytes": [conn.orig_bytes, conn.reply_bytes],
    }


def conntrack_rows(table: ConnTable, now: float) -> list[dict]:
    return [conn_row(conn, now) for conn in table]


FLAG_LETTERS = "FSRPAUEC"


def flag_letters(flags: int) -> str:
    return "".join(letter for bit, letter in enumerate(FLAG_LETTERS) if flags & (1 << bit))


@lru_cache(maxsize=65536)
def address_text(family: int, addr: int) -> str:
    """Addresses repeat packet after packet; ipaddress formatting is slow enough to cache."""
    if not family:
        return "?"
    return str(IPv4Address(addr) if family == 4 else IPv6Address(addr))


def summary(pkt) -> str:
    """A packet in one line, in the form `explain` accepts back (tcpdump-like)."""
    if not pkt.family:
        return f"undecodable ({pkt.invalid})"
    src, dst = address_text(pkt.family, pkt.src), address_text(pkt.family, pkt.dst)
    name = PROTO_NAMES.get(pkt.proto, f"proto {pkt.proto}")
    if pkt.sport >= 0:
        text = f"{name} {endpoint(pkt.family, pkt.src, pkt.sport)} -> "
        text += endpoint(pkt.family, pkt.dst, pkt.dport)
        if pkt.proto == 6:
            text += f" flags {flag_letters(pkt.tcp_flags) or '.'}"
    elif pkt.icmp_type >= 0:
        text = f"{name} {src} -> {dst} type {type_name(pkt.family, pkt.icmp_type)}"
    else:
        text = f"{name} {src} -> {dst}"
    if pkt.is_later_fragment:
        text += f" (fragment offset {pkt.frag_offset})"
    return text + (f" [malformed: {pkt.invalid}]" if pkt.invalid else "")


def nat_rows(nat, now: float) -> list[dict]:
    """The mapping table: inside, outside, remotes, protocol, age, time left."""
    rows = []
    for m in nat.mappings:
        rows.append({
            "proto": PROTO_NAMES.get(m.proto, str(m.proto)),
            "inside": f"{ip_address(m.inside[0])}:{m.inside[1]}",
            "outside": f"{ip_address(m.outside[0])}:{m.outside[1]}",
            "remotes": sorted(f"{ip_address(a)}:{p}" for a, p in m.remotes),
            "mapping": m.mapping, "filtering": m.filtering,
            "age": round(now - m.created, 3),
            "timeout": round(m.hold_until() - now, 3),
            "connections": len(m.conns),
        })
    return rows
