"""The engine's data as people and scripts read it: status, conntrack and NAT tables, packet
summaries, NAT changes. The engine returns data and never formats; the commands and the daemon
call these (so presentation sits above the engine, never inside it)."""

from __future__ import annotations

from dataclasses import asdict
from ipaddress import ip_address
from typing import TYPE_CHECKING

from fw.core.icmp_types import type_name
from fw.core.protocols import PROTO_NAMES, TCP, flag_letters
from fw.core.text import address_text, endpoint, rule_ref, tuple_text
from fw.model import CHAINS

if TYPE_CHECKING:
    from fw.engine.conntrack import Conn, ConnTable
    from fw.engine.ct_events import CtEvent
    from fw.engine.decision import Decision, NatChange
    from fw.engine.engine import Engine


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


def summary(pkt) -> str:
    """A packet in one line, in the form `explain` accepts back (tcpdump-like)."""
    if not pkt.family:
        return f"undecodable ({pkt.invalid})"
    src, dst = address_text(pkt.family, pkt.src), address_text(pkt.family, pkt.dst)
    name = PROTO_NAMES.get(pkt.proto, f"proto {pkt.proto}")
    if pkt.sport >= 0:
        text = f"{name} {endpoint(pkt.family, pkt.src, pkt.sport)} -> "
        text += endpoint(pkt.family, pkt.dst, pkt.dport)
        if pkt.proto == TCP:
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


def nat_change_json(change: NatChange) -> dict:
    def ends(t: tuple[int, int, int, int]) -> dict:
        return {"src": endpoint(change.family, t[0], t[1]),
                "dst": endpoint(change.family, t[2], t[3])}

    view = {"kind": change.kind, "from": ends(change.before), "to": ends(change.after)}
    if change.why:
        view["why"] = change.why
    return view


def nat_change_text(change: NatChange) -> str:
    view = nat_change_json(change)
    a, b = view["from"], view["to"]
    why = f"  ({change.why})" if change.why else ""
    return f"{change.kind}: {a['src']} -> {a['dst']}  =>  {b['src']} -> {b['dst']}{why}"


def pool_rows(nat, now: float) -> list[dict]:
    """Every pool's members: connections given (total), still in the table (active), and the
    clients it keeps sticky to each."""
    rows = []
    for state in nat.pools.values():
        active = state.active(now, nat.table.contains)
        pool, rule = state.pool, state.rule
        for i, member in enumerate(pool.members):
            rows.append({
                "rule": rule_ref(rule), "method": pool.method, "member": i + 1,
                "address": str(member.addr), "port": member.port if member.port is not None
                else pool.port, "weight": member.weight, "active": active[i],
                "total": state.counts[i].total,
                "sticky": sum(e.member == i for e in state.sticky.values()),
            })
    return rows


def sticky_rows(nat, now: float) -> list[dict]:
    """The stickiness table: client, member, its connections alive, time left once idle."""
    rows = []
    for state in nat.pools.values():
        for src, entry in state.sticky.items():
            live = state.holds(entry, now, nat.table.contains)
            rows.append({
                "rule": rule_ref(state.rule), "client": address_text(4, src),
                "member": str(state.pool.members[entry.member].addr),
                "connections": len(entry.conns),
                "expires_in": None if entry.conns or not live else
                round(entry.last_end + state.pool.sticky - now, 3),
            })
    return rows


def decision_view(engine: Engine, d: Decision) -> dict:
    """A decision as `explain` shows it and `fwlab trace` sends it: the verdict, the deciding
    rule (`by`: its place and text, or the policy), every rule tried, NAT, the packet leaving."""
    from fw.dsl.format import match_text
    from fw.engine.packet import decode

    span = d.rule.span if d.rule is not None else None
    if d.rule is None:
        by = f"policy {d.chain} {engine.compiled.policy(d.chain)}"
    else:
        by = f"{span}: {d.rule.text}" if span else d.rule.text
    return {
        "verdict": d.verdict, "chain": d.chain, "rule": rule_ref(d.rule), "by": by,
        "ct_state": d.ct_state, "reason": d.reason, "iif": d.iif, "oif": d.oif,
        "leaves": summary(decode(d.packet)) if d.packet is not None else None,
        "nat": [nat_change_json(nat) for nat in d.nat],
        "nat_text": [nat_change_text(nat) for nat in d.nat],
        "trace": [{"line": s.rule.span.line if s.rule.span else None, "text": s.rule.text,
                   "matched": s.matched, "verdict": s.rule.verdict,
                   "failed": match_text(s.failed) if s.failed is not None else None}
                  for s in d.trace],
    }


def ct_event_row(event: CtEvent, now: float) -> dict:
    """A conntrack event for `fwlab conntrack --follow --json` (as `conntrack -E -o` fields)."""
    from fw.engine.conntrack import FlowState
    from fw.engine.tcp_states import TcpState

    conn = event.conn
    tcp = conn.proto == 6
    return {
        "event": event.kind.upper(), "id": conn.id, "family": conn.family,
        "proto": PROTO_NAMES.get(conn.proto, str(conn.proto)), "proto_num": conn.proto,
        "timeout": max(0, round(event.expires - now)) if event.kind != "destroy" else None,
        "state": TcpState(event.state).name if tcp else FlowState(event.state).name,
        "orig": tuple_fields(conn.family, conn.orig), "reply": tuple_fields(conn.family,
                                                                            conn.reply),
        "unreplied": not event.seen_reply, "assured": event.assured,
        "reason": event.reason or None,
        "packets": [conn.orig_packets, conn.reply_packets],
        "bytes": [conn.orig_bytes, conn.reply_bytes],
    }


def tuple_fields(family: int, key: tuple) -> dict:
    """src, dst and ports (or an ICMP query's type, code and id) of one direction."""
    from fw.engine.conntrack import query_fields

    proto, src, sport, dst, dport = key
    fields = {"src": address_text(family, src), "dst": address_text(family, dst)}
    if proto in (1, 58):
        kind, code, ident = query_fields(family, sport)
        fields.update(type=kind, code=code, id=ident)
    elif proto in (6, 17):
        fields.update(sport=sport, dport=dport)
    return fields
