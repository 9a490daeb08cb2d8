"""`fwlab diff` against the engine, on random small pairs of rule sets (either mode each).

- Every example `diff` reports is judged differently by the engine: replayed as it stands, with
  its `after` packets first, in fresh engines for A and B (and in the state the region says).
- Every packet the engine judges differently lies in a reported region of its chain and state:
  random packets in both directions (fresh engines: `new` or `invalid`), and replies of
  connections both files let open (`established`).
"""

from __future__ import annotations

import random

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from fw.analysis.diff import diff
from fw.analysis.exposure import Probe
from fw.core import ranges
from fw.core.fields import F, field_list, packet_values
from fw.core.protocols import ACK, SYN, TCP, UDP
from fw.engine.engine import Engine
from fw.engine.packet import decode
from fw.engine.routing import default_routing
from fw.packetspec import parse_packet
from tests.test_exposure_property import load_text, rule

DNAT = ["iif wan tcp dport 8080 dnat to 192.0.2.10:80", "iif wan udp dport 5000 dnat to 192.0.2.20",
        "tcp dport 2222 dnat to 192.0.2.11:22"]
SNAT = ["oif wan masquerade", "iif lan oif wan snat to 203.0.113.1"]


@st.composite
def rulesets(draw: st.DrawFn, nat: bool = False) -> str:
    stateful = draw(st.booleans())
    lines = [f"mode {'stateful' if stateful else 'stateless'}"]
    for chain in ("input", "forward", "output"):
        lines.append(f"policy {chain} {draw(st.sampled_from(['accept', 'drop']))}")
    for chain, most in (("forward", 6), ("input", 2)):
        lines.append(f"{chain} {{")
        lines += ["    " + r for r in draw(st.lists(rule(stateful), max_size=most))]
        lines.append("}")
    if stateful and nat:
        chosen = draw(st.lists(st.sampled_from(DNAT + SNAT), max_size=2, unique=True))
        lines += ["nat {", *("    " + r for r in chosen), "}"]
    return "\n".join(lines) + "\n"


def hook_of(chain: str) -> str:
    return "output" if chain == "output" else "prerouting"


def replay(ruleset, d, ifaces: dict[str, int]):
    """The example through a fresh engine, its `after` packets first (the firewall's own
    openers, for replies in `input`, leave through `output`). A region that holds only
    spoofed sources (not routed through its `iif`) is replayed with its `iif`, as
    `explain --iif` would."""
    engine = Engine(ruleset, seed=0)
    names = {v: k for k, v in ifaces.items()}
    iifs = d.box[F["iif"]]
    iif = names.get(iifs[0][0]) if len(iifs) == 1 and iifs[0][0] == iifs[0][1] else None
    stateful_reply = d.ct_state in ("established", "related")
    after_hook = {"input": "output", "output": "prerouting"}.get(d.chain, "prerouting")
    for i, text in enumerate(d.after):
        engine.process(parse_packet(text), hook=after_hook if stateful_reply else "prerouting",
                       now=i * 0.001)
    return engine.process(parse_packet(d.example), hook=hook_of(d.chain), iif=iif,
                          now=len(d.after) * 0.001)


def assert_examples_differ(a, b, result) -> None:
    for d in result.differences:
        da, db = replay(a, d, result.ifaces), replay(b, d, result.ifaces)
        if d.chain in ("dnat", "snat"):
            if d.chain == "snat" and not (da.accepted and db.accepted):
                continue
            assert kinds(da) != kinds(db), (d.example, da, db)
            continue
        assert (da.verdict, da.chain) != (db.verdict, db.chain), (d, da, db)
        for side, dec in ((a, da), (b, db)):
            if side.stateful:
                assert dec.ct_state == d.ct_state, (d, dec)


def kinds(decision) -> tuple:
    return tuple((c.kind, c.after) for c in decision.nat)


# -- random packets --------------------------------------------------------------------------

LAN4 = ["192.0.2.10", "192.0.2.11", "192.0.2.200", "192.0.2.1"]
WAN4 = ["198.51.100.7", "203.0.113.9", "203.0.113.1", "10.1.2.3"]
LAN6 = ["2001:db8:1::10", "2001:db8:1::1", "2001:db8:1::ff"]
WAN6 = ["2001:db8:2::7", "2001:db8:2::1", "2001:db8:ff::1"]
PORTS = [22, 53, 80, 443, 1000, 2222, 5000, 8080, 32768, 40000, 60999, 65535]


def random_probe(rng: random.Random) -> Probe:
    family = rng.choice([4, 6])
    hosts = (LAN4 + WAN4) if family == 4 else (LAN6 + WAN6)
    src, dst = rng.choice(hosts), rng.choice(hosts)
    proto = rng.choice([TCP, TCP, UDP, 1 if family == 4 else 58])
    if proto in (TCP, UDP):
        flags = rng.choice([SYN, SYN, SYN | ACK, ACK, 0x04, 0x01 | ACK, rng.randrange(256)])
        return Probe(family, proto, src, dst, rng.choice(PORTS), rng.choice(PORTS),
                     flags if proto == TCP else 0)
    types = [0, 3, 8, 11, 13] if family == 4 else [1, 2, 128, 129, 4]
    return Probe(family, proto, src, dst, icmp_type=rng.choice(types))


def point(result, packet: bytes, decision) -> list[int]:
    ids = result.ifaces
    values = packet_values(decode(packet), ids.get(decision.iif or "", -1),
                           ids.get(decision.oif or "", -1), None)
    out = field_list(values)
    out[F["ct_state"]] = -1  # each side sets its own: the region's state is compared apart
    return out


def shown_state(a, b, da, db):
    if a.stateful:
        return da.ct_state
    return db.ct_state if b.stateful else None


def assert_differences_reported(a, b, result, rng: random.Random, n: int = 40) -> None:
    for _ in range(n):
        probe = random_probe(rng)
        packet = probe.packet()
        da = Engine(a, seed=0).process(packet)
        db = Engine(b, seed=0).process(packet)
        if (da.verdict, da.chain) == (db.verdict, db.chain) or kinds(da) or kinds(db):
            continue
        values = point(result, packet, da)
        state = shown_state(a, b, da, db)
        assert in_region(result, da.chain, state, values), (probe, da, db)


def in_region(result, chain, state, values) -> bool:
    for d in result.differences:
        if d.chain != chain or d.ct_state != state:
            continue
        if all(ranges.contains(d.box[i], values[i]) for i in range(len(values))
               if i != F["ct_state"]):
            return True
    return False


def assert_replies_reported(a, b, result, rng: random.Random, n: int = 20) -> None:
    """Open a connection in both, then send a reply: where the verdicts on the reply differ,
    the reply is in an `established` region."""
    if not (a.stateful or b.stateful):
        return
    for _ in range(n):
        probe = random_probe(rng)
        if probe.proto == TCP:
            probe = Probe(probe.family, TCP, probe.src, probe.dst, probe.sport, probe.dport, SYN)
        elif probe.proto not in (UDP,):
            continue
        engines = [Engine(a, seed=0), Engine(b, seed=0)]
        opened = [e.process(probe.packet(), now=0.0) for e in engines]
        if not all(d.accepted and d.chain == "forward" and not d.nat for d in opened):
            continue
        reply = Probe(probe.family, probe.proto, probe.dst, probe.src, probe.dport, probe.sport,
                      SYN | ACK if probe.proto == TCP else 0)
        data = reply.packet() if probe.proto != TCP else parse_packet(
            f"tcp {ep(reply.src, reply.sport)} -> {ep(reply.dst, reply.dport)} flags SA seq 7 "
            "ack 1")
        da, db = (e.process(data, now=0.001) for e in engines)
        if da.verdict == db.verdict or da.chain != "forward" or kinds(da) or kinds(db):
            continue
        values = point(result, data, da)
        assert in_region(result, da.chain, shown_state(a, b, da, db), values), (reply, da, db)


def ep(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


@settings(max_examples=int(__import__("os").environ.get("DIFF_EXAMPLES", "40")), deadline=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(rulesets(), rulesets(), st.integers(0, 2**32))
@example(  # a timestamp request is answered by a timestamp reply only, not an echo reply
    "mode stateless\npolicy input accept\npolicy forward accept\npolicy output accept\n"
    "forward {\n    iif lan accept\n}\n",
    "mode stateful\npolicy input accept\npolicy forward accept\npolicy output accept\n"
    "forward {\n    icmp type timestamp-request iif lan accept\n"
    "    ip saddr != 203.0.113.1 drop\n}\n", 227)
def test_diff_matches_the_engine(text_a: str, text_b: str, seed: int) -> None:
    a, b = load_text(text_a), load_text(text_b)
    result = diff(a, b, default_routing())
    assert_examples_differ(a, b, result)
    rng = random.Random(seed)
    assert_differences_reported(a, b, result, rng)
    assert_replies_reported(a, b, result, rng)


@example(  # the example was a packet from the firewall to itself: its own reply, never established
    text_a="mode stateless\npolicy input drop\npolicy forward accept\npolicy output accept\n"
           "forward {\n}\ninput {\n}\n",
    text_b="mode stateful\npolicy input accept\npolicy forward accept\npolicy output accept\n"
           "forward {\n}\ninput {\n    iif lan ip saddr { 198.51.100.7, 192.0.2.1 } accept\n}\n"
           "nat {\n}\n",
    seed=0)
@settings(max_examples=int(__import__("os").environ.get("DIFF_EXAMPLES", "40")) // 2,
          deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rulesets(nat=True), rulesets(nat=True), st.integers(0, 2**32))
def test_diff_with_nat_matches_the_engine(text_a: str, text_b: str, seed: int) -> None:
    """With port forwards and masquerade: examples still replay as differences (replies are
    addressed to the translated address), and untranslated packets are still covered."""
    a, b = load_text(text_a), load_text(text_b)
    result = diff(a, b, default_routing())
    assert_examples_differ(a, b, result)
    assert_differences_reported(a, b, result, random.Random(seed))
