"""`dnat to POOL` as nft: a map looked up by `numgen inc`, `numgen random` or `jhash`.

- round-robin: `numgen inc mod W map { 0 : a, 1 : b, 2 : a, ... }`, one key per step of the
  engine's smooth weighted order (fw/engine/pools.py), so the kernel takes the same members in
  the same order;
- random: `numgen random mod W map { 0-1 : a, 2 : b }`, each member a run of keys as long as
  its weight (the engine draws the same way);
- hash: `jhash ip saddr . th sport mod W map {...}`, source-hash: `jhash ip saddr mod W ...`:
  the same inputs and shares; the kernel's hash is another function, so a given client may land
  on another member than in the engine, but each connection (hash) or client (source-hash) still
  keeps one member.
- Ports: a member's own port or the pool's makes the map's values `address . port` (`dnat ip
  to`); without any, the packet keeps its port, as in the engine.
- `sticky N seconds` has no nft counterpart (the kernel has no table of clients that outlives
  their connections by N seconds): refused unless `approximate`, then exported without it, with
  a warning and a comment on the rule.
"""

from __future__ import annotations

from fw.dsl.diagnostics import Diagnostic
from fw.engine.pools import smooth_order
from fw.errors import FwlabError
from fw.model import NatRule, Pool, PortMatch

SELECTORS = {"round-robin": "numgen inc", "random": "numgen random",
             "hash": "jhash ip saddr . th sport", "source-hash": "jhash ip saddr"}


def pool_action(rule: NatRule) -> str:
    """The `dnat ... to` statement for a pool."""
    pool = rule.pool
    total = sum(m.weight for m in pool.members)
    ported = pool.port is not None or any(m.port is not None for m in pool.members)
    values = [value(rule, i, ported) for i in range(len(pool.members))]
    entries = ", ".join(f"{key} : {values[i]}" for key, i in keys(pool))
    family = "ip " if ported else ""
    return f"dnat {family}to {SELECTORS[pool.method]} mod {total} map {{ {entries} }}"


def keys(pool: Pool) -> list[tuple[str, int]]:
    """(key, member index): each step of the order for round-robin, else runs of weight."""
    if pool.method == "round-robin":
        return [(str(step), i) for step, i in enumerate(smooth_order([m.weight for m in
                                                                       pool.members]))]
    found, start = [], 0
    for i, member in enumerate(pool.members):
        end = start + member.weight - 1
        found.append((str(start) if end == start else f"{start}-{end}", i))
        start = end + 1
    return found


def value(rule: NatRule, index: int, ported: bool) -> str:
    pool = rule.pool
    member = pool.members[index]
    if not ported:
        return str(member.addr)
    port = member.port if member.port is not None else pool.port
    return f"{member.addr} . {port if port is not None else matched_port(rule)}"


def matched_port(rule: NatRule) -> int:
    """A member without a port keeps the packet's; in a map of `address . port` values that
    must be a constant: the rule's one `dport`."""
    ports = [r for m in rule.matches if isinstance(m, PortMatch) and m.kind == "dport"
             and not m.negate for r in m.ranges]
    if len(ports) != 1 or ports[0].lo != ports[0].hi:
        raise FwlabError("nft needs a port for every member once one has a port: give the "
                         "pool a port ('}:PORT') or match one 'dport'", rule.span)
    return ports[0].lo


def sticky_note(rule: NatRule, approximate: bool, warnings: list[Diagnostic]) -> str | None:
    """None without `sticky`; else refuse, or approximate (drop it) with a warning."""
    if rule.pool is None or rule.pool.sticky is None:
        return None
    seconds = rule.pool.sticky
    if not approximate:
        raise FwlabError(f"the kernel cannot give 'sticky {seconds} seconds' (it keeps no "
                         "client's backend after its connections end); --approximate exports "
                         "the pool without stickiness", rule.span)
    warnings.append(Diagnostic("warning", f"exported approximately: 'sticky {seconds} seconds' "
                               "is left out (the kernel keeps a client on its backend only "
                               "while a connection lasts)", rule.span))
    return f"fwlab approximates: without sticky {seconds} seconds"
