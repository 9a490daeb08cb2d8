"""An nft `dnat to <selector> map { ... }` as fwlab's `dnat to POOL` (the inverse of
nft_pool.py): `numgen inc` is round-robin, `numgen random` random, `jhash ip saddr . th sport`
hash and `jhash ip saddr` source-hash; a member's weight is how many keys lead to it.

A round-robin map must list its members in the engine's smooth weighted order (what the
exporter writes), and a random or hash map must give each member one run of keys, so that the
imported pool chooses exactly as the map did for fwlab; other maps are reported as unsupported.
"""

from __future__ import annotations

from itertools import permutations

from fw.engine.pools import smooth_order
from fw.export.nft_expr import Unsupported

MAX_ORDER_SEARCH = 7  # members; the order of a round-robin map is searched for up to this many
SADDR = {"payload": {"protocol": "ip", "field": "saddr"}}
SPORTS = [{"payload": {"protocol": p, "field": "sport"}} for p in ("th", "tcp", "udp")]

Member = tuple[str, int | None]  # (address, port or None)


def is_pool(body: dict | None) -> bool:
    addr = (body or {}).get("addr")
    return isinstance(addr, dict) and "map" in addr


def pool_text(body: dict) -> tuple[str, bool]:
    """(`{ A weight 2, B:P }:PORT method`, whether it changes the port)."""
    table = body["addr"]["map"]
    method = selector(table.get("key"))
    slots = entries(table.get("data"), modulus(table.get("key")))
    members = list(dict.fromkeys(slots))
    weights = [slots.count(m) for m in members]
    members, weights = ordered(method, slots, members, weights)
    ports = {port for _, port in members}
    shared = ports.pop() if len(ports) == 1 else None
    words = [member_text(m, w, shared is None) for m, w in zip(members, weights, strict=True)]
    tail = f":{shared}" if shared is not None else ""
    return "{ " + ", ".join(words) + " }" + tail + f" {method}", any(p for _, p in members)


def selector(key: dict | None) -> str:
    key = key or {}
    if "numgen" in key:
        numgen = key["numgen"]
        if numgen.get("offset", 0) != 0:
            raise Unsupported("numgen with an offset")
        return {"inc": "round-robin", "random": "random"}[numgen.get("mode", "inc")]
    if "jhash" in key:
        expr = key["jhash"].get("expr")
        if expr == SADDR:
            return "source-hash"
        if isinstance(expr, dict) and expr.get("concat", [None])[0] == SADDR and \
                len(expr["concat"]) == 2 and expr["concat"][1] in SPORTS:
            return "hash"
        raise Unsupported("jhash over other fields than ip saddr [. th sport]")
    raise Unsupported(f"a dnat map keyed by {next(iter(key), 'nothing')}")


def modulus(key: dict) -> int:
    return next(iter(key.values()))["mod"]


def entries(data: dict | None, mod: int) -> list[Member]:
    """The member of each key 0 .. mod-1, in key order."""
    slots: dict[int, Member] = {}
    for key, value in (data or {}).get("set", []):
        lo, hi = (key["range"] if isinstance(key, dict) else (key, key))
        for k in range(lo, hi + 1):
            slots[k] = member_of(value)
    if sorted(slots) != list(range(mod)):
        raise Unsupported(f"a dnat map whose keys are not 0-{mod - 1}")
    return [slots[k] for k in range(mod)]


def member_of(value: object) -> Member:
    if isinstance(value, str):
        return value, None
    if isinstance(value, dict) and "concat" in value:
        address, port = value["concat"]
        if isinstance(address, str) and isinstance(port, int):
            return address, port
    raise Unsupported(f"a dnat map value of the form {value!r}")


def ordered(method: str, slots: list[Member], members: list[Member],
            weights: list[int]) -> tuple[list[Member], list[int]]:
    """The members in the order that makes the engine choose as the map does."""
    if method != "round-robin":
        runs = [m for i, m in enumerate(slots) if i == 0 or slots[i - 1] != m]
        if len(runs) != len(members):
            raise Unsupported("a dnat map that gives a member more than one run of keys")
        return members, weights
    order = [members.index(m) for m in slots]
    if len(members) <= MAX_ORDER_SEARCH:
        for perm in permutations(range(len(members))):
            if [perm[i] for i in smooth_order([weights[p] for p in perm])] == order:
                return [members[p] for p in perm], [weights[p] for p in perm]
    raise Unsupported("a numgen inc map in another order than fwlab's weighted round-robin")


def member_text(member: Member, weight: int, own_port: bool) -> str:
    address, port = member
    text = f"{address}:{port}" if own_port and port is not None else address
    return text + (f" weight {weight}" if weight != 1 else "")
