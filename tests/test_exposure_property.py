"""The static exposure analysis against the engine, on random small rule sets.

For random rule sets over a small universe (a few prefixes, ports, flags, ICMP types, both
modes, `!=`, sets) and random unsolicited packets from `wan` (a fresh engine per packet, so
nothing is solicited):
- the engine forwards a packet to the inside exactly when the analysis says it gets in;
- what the engine lets in is inside the reported exposure (class, address, port, source, sport);
- every exposed point the analysis reports has a witness packet that the engine lets in.
"""

from __future__ import annotations

import ipaddress
import os
import random
import tempfile
from dataclasses import replace
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fw.analysis.exposure import ACK, SYN, TCP, UDP, Probe, analyse
from fw.core import ranges
from fw.core.protocols import LINK_CONTROL_ICMPV6
from fw.dsl import load_ruleset
from fw.engine.engine import Engine
from fw.engine.packet import decode
from fw.errors import RulesError

# the engine applies dnat before the filter chains (fw/engine/nat.py): random sets include it
NAT_IN_ENGINE = (Path(__file__).resolve().parent.parent / "fw/engine/nat.py").exists()

V4_IN = ["192.0.2.10", "192.0.2.11", "192.0.2.0/25", "192.0.2.128/25", "192.0.2.0/24",
         "192.0.2.1"]
V4_OUT = ["198.51.100.7", "198.51.100.0/24", "203.0.113.0/24", "0.0.0.0/0", "203.0.113.1"]
V6_IN = ["2001:db8:1::10", "2001:db8:1::/64", "2001:db8:1::/120"]
V6_OUT = ["2001:db8:2::7", "2001:db8:2::/48", "::/0"]
PORTS = ["22", "53", "80", "443", "8080", "1000-2000", "32768-60999", "60999-65535", "0"]
FLAGS = ["syn", "syn,!ack", "ack", "rst", "fin", "!syn", "syn,ack", "!ack", "syn,!rst,!fin"]
ICMP4 = ["echo-request", "echo-reply", "destination-unreachable", "time-exceeded",
         "timestamp-request"]
ICMP6 = ["echo-request", "echo-reply", "packet-too-big", "destination-unreachable", "time-exceeded"]
CT = ["new", "invalid", "established,related", "new,invalid", "established", "related"]
PROTOS = ["tcp", "udp", "icmp", "icmpv6"]

NEG = st.sampled_from(["", "", "!= "])


def one_or_set(items: list[str]) -> st.SearchStrategy[str]:
    single = st.sampled_from(items)
    many = st.lists(single, min_size=1, max_size=3, unique=True).map(
        lambda xs: "{ " + ", ".join(xs) + " }")
    return st.one_of(single, many)


def prefixes(v4: list[str], v6: list[str]) -> st.SearchStrategy[str]:
    return st.one_of(
        st.tuples(NEG, one_or_set(v4)).map(lambda t: f"{t[0]}{t[1]}").map(lambda v: ("ip", v)),
        st.tuples(NEG, one_or_set(v6)).map(lambda t: f"{t[0]}{t[1]}").map(lambda v: ("ip6", v)),
    )


def match(stateful: bool) -> st.SearchStrategy[str]:
    kinds = [
        st.tuples(st.sampled_from(["iif", "oif"]), NEG, one_or_set(["lan", "wan"])).map(
            lambda t: f"{t[0]} {t[1]}{t[2]}"),
        prefixes(V4_IN + V4_OUT, V6_IN + V6_OUT).map(lambda t: f"{t[0]} daddr {t[1]}"),
        prefixes(V4_OUT + V4_IN, V6_OUT + V6_IN).map(lambda t: f"{t[0]} saddr {t[1]}"),
        st.tuples(NEG, one_or_set(PROTOS)).map(lambda t: f"proto {t[0]}{t[1]}"),
        st.tuples(st.sampled_from(["tcp", "udp"]), st.sampled_from(["sport", "dport"]), NEG,
                  one_or_set(PORTS)).map(lambda t: f"{t[0]} {t[1]} {t[2]}{t[3]}"),
        st.tuples(NEG, st.sampled_from(FLAGS)).map(lambda t: f"tcp flags {t[0]}{t[1]}"),
        st.tuples(NEG, one_or_set(ICMP4)).map(lambda t: f"icmp type {t[0]}{t[1]}"),
        st.tuples(NEG, one_or_set(ICMP6)).map(lambda t: f"icmpv6 type {t[0]}{t[1]}"),
    ]
    if stateful:
        kinds.append(st.tuples(NEG, st.sampled_from(CT)).map(lambda t: f"ct state {t[0]}{t[1]}"))
    return st.one_of(kinds)


def rule(stateful: bool) -> st.SearchStrategy[str]:
    verdict = st.sampled_from(["accept", "accept", "drop", "reject", "counter"])
    return st.tuples(st.lists(match(stateful), max_size=4), verdict).map(
        lambda t: " ".join([*t[0], t[1]]))


DNAT = [
    "iif wan tcp dport 8080 dnat to 192.0.2.10:80",
    "iif wan tcp dport { 2222, 8080 } dnat to 192.0.2.11:22",
    "iif wan udp dport 5000-5010 dnat to 192.0.2.20",
    "iif wan ip saddr 198.51.100.0/24 tcp dport 8080 dnat to 192.0.2.12:8080",
    "tcp dport 8080 dnat to 192.0.2.11:22",
    "iif lan tcp dport 8080 dnat to 192.0.2.12:8081",
    "iif != wan udp dport 53 dnat to 192.0.2.53",
    "iif wan dnat to 192.0.2.30",
    "iif wan ip daddr 203.0.113.1 udp dport 53 dnat to 192.0.2.53",
    "iif wan ip daddr != 203.0.113.1 tcp dport 80 dnat to 192.0.2.80:8000",
    "iif wan tcp dport 443 dnat to 198.51.100.1",
    "iif wan tcp flags syn tcp dport 8443 dnat to 192.0.2.10:443",
    "iif wan icmp type echo-request dnat to 192.0.2.31",
]
SNAT = ["oif wan masquerade", "iif lan oif wan snat to 203.0.113.1"]


@st.composite
def rulesets(draw: st.DrawFn) -> str:
    stateful = draw(st.booleans())
    lines = [f"mode {'stateful' if stateful else 'stateless'}",
             f"policy forward {draw(st.sampled_from(['accept', 'drop']))}",
             f"policy input {draw(st.sampled_from(['accept', 'drop']))}",
             "forward {"]
    lines += ["    " + r for r in draw(st.lists(rule(stateful), max_size=8))]
    lines.append("}")
    if stateful and NAT_IN_ENGINE:
        nat = draw(st.lists(st.sampled_from(DNAT + SNAT), max_size=4, unique=True))
        lines += ["nat {", *("    " + r for r in nat), "}"]
    return "\n".join(lines) + "\n"


def load_text(text: str):
    """The rule set of `text`, less the rules the language refuses because they can never match
    (`iif lan iif wan`): they decide nothing, so leaving them out changes no verdict."""
    while True:
        fd, name = tempfile.mkstemp(suffix=".fw")
        try:
            os.write(fd, text.encode())
            os.close(fd)
            return load_ruleset(name)
        except RulesError as exc:
            dead = {d.span.line for d in exc.diagnostics
                    if d.severity == "error" and "can never match" in d.message}
            if not dead or any(d.severity == "error" and "can never match" not in d.message
                               for d in exc.diagnostics):
                raise
            lines = text.split("\n")
            text = "\n".join(line for i, line in enumerate(lines, 1) if i not in dead)
        finally:
            Path(name).unlink()


SRC4 = ["198.51.100.7", "198.51.100.8", "203.0.113.9", "192.0.2.10", "10.1.2.3", "0.0.0.0"]
SRC6 = ["2001:db8:2::7", "2001:db8:2::8", "2001:db8:ff::1", "2001:db8:1::10", "::1"]
DST4 = ["192.0.2.10", "192.0.2.11", "192.0.2.0", "192.0.2.1", "192.0.2.127", "192.0.2.128",
        "192.0.2.255", "203.0.113.1", "203.0.113.1", "198.51.100.9"]
DST6 = ["2001:db8:1::10", "2001:db8:1::1", "2001:db8:1::ff", "2001:db8:1::100",
        "2001:db8:1:0:ffff:ffff:ffff:ffff"]
PORT_PICKS = [0, 1, 22, 53, 79, 80, 81, 443, 999, 1000, 2000, 2222, 5000, 5010, 8080, 8443,
              32767, 32768, 40000, 60999, 61000, 65535]


def random_probe(rng: random.Random) -> Probe:
    family = rng.choice([4, 6])
    src = rng.choice(SRC4 if family == 4 else SRC6)
    dst = rng.choice(DST4 if family == 4 else DST6)
    proto = rng.choice([TCP, TCP, UDP, 1 if family == 4 else 58])
    port = lambda: rng.choice(PORT_PICKS) if rng.random() < 0.8 else rng.randrange(65536)  # noqa: E731
    if proto in (TCP, UDP):
        flags = rng.choice([SYN, SYN | ACK, ACK, 0x04, 0x01 | ACK, rng.randrange(256)])
        dport = port()
        if family == 4 and rng.random() < 0.3:  # at a port forward
            dst = rng.choice(["203.0.113.1", "203.0.113.1", "192.0.2.1", "198.51.100.9"])
            dport = rng.choice([8080, 2222, 5000, 5005, 5010, 53, 80, 443, 8443])
        return Probe(family, proto, src, dst, port(), dport, flags if proto == TCP else 0)
    types = [0, 3, 8, 11, 13] if family == 4 else [1, 2, 128, 129, 4, 200]
    icmp_type = rng.choice(types) if rng.random() < 0.8 else rng.randrange(256)
    if family == 6 and icmp_type in LINK_CONTROL_ICMPV6:
        icmp_type = 128
    return Probe(family, proto, src, dst, icmp_type=icmp_type)


def engine_verdict(ruleset, probe: Probe) -> tuple[bool, Probe]:
    """Does a fresh engine forward the probe to the inside, and as what (after dnat)?"""
    decision = Engine(ruleset).process(probe.packet(), iif="wan")
    inside = decision.verdict == "accept" and decision.chain == "forward" and decision.oif == "lan"
    if inside and decision.packet is not None:
        out = decode(decision.packet)
        probe = replace(probe, dst=str(ipaddress.ip_address(out.dst)),
                        dport=out.dport if out.dport >= 0 else probe.dport)
    return inside, probe


def engine_lets_in(ruleset, probe: Probe) -> bool:
    return engine_verdict(ruleset, probe)[0]


def class_of(probe: Probe) -> list[str]:
    if probe.proto == TCP:
        syn = probe.flags & SYN and not probe.flags & ACK
        return ["tcp_any", "tcp_syn"] if syn else ["tcp_any"]
    return ["udp"] if probe.proto == UDP else ["icmp"]


def in_report(exposure, probe: Probe) -> bool:
    fam = probe.family
    dst = int(ipaddress.ip_address(probe.dst))
    src = int(ipaddress.ip_address(probe.src))
    for name in class_of(probe):
        c = exposure[name]
        if not ranges.contains(c.addresses.get(fam, ()), dst):
            return False
        if not ranges.contains(c.sources.get(fam, ()), src):
            return False
        if name == "icmp":
            if not ranges.contains(c.types.get(fam, ()), probe.icmp_type):
                return False
        elif not (ranges.contains(c.ports, probe.dport)
                  and ranges.contains(c.source_ports, probe.sport)):
            return False
    return True


PROPERTY = settings(max_examples=int(os.environ.get("FWLAB_EXPOSURE_EXAMPLES", "150")),
                    deadline=None, suppress_health_check=[HealthCheck.too_slow])


@PROPERTY
@given(text=rulesets(), seed=st.integers(0, 2**32 - 1))
def test_analysis_agrees_with_engine_on_random_packets(text: str, seed: int) -> None:
    ruleset = load_text(text)
    exposure = analyse(ruleset)
    rng = random.Random(seed)
    for _ in range(40):
        probe = random_probe(rng)
        engine, forwarded = engine_verdict(ruleset, probe)
        static = exposure.accepts(probe)
        assert engine == static, (text, probe, engine, static)
        if engine:
            assert in_report(exposure, forwarded), (text, probe, forwarded)


@PROPERTY
@given(text=rulesets(), seed=st.integers(0, 2**32 - 1))
def test_every_exposed_point_has_a_witness_the_engine_lets_in(text: str, seed: int) -> None:
    ruleset = load_text(text)
    exposure = analyse(ruleset)
    rng = random.Random(seed)
    for name, c in exposure.classes().items():
        for fam, addrs in c.addresses.items():
            for _ in range(3):
                lo, hi = rng.choice(addrs)
                addr = rng.randint(lo, hi)
                values = c.types.get(fam, ()) if name == "icmp" else c.ports
                if not values:
                    continue
                vlo, vhi = rng.choice(values)
                value = rng.randint(vlo, vhi)
                probe = exposure.witness(name, fam, addr, value)
                # the point is in the projection, but maybe not for this address and port
                if probe is None:
                    continue
                assert engine_lets_in(ruleset, probe), (text, name, probe)
                assert name in class_of(probe)


def test_the_witness_search_finds_the_reported_points() -> None:
    """Projections are exact per class when one rule opens one product, as in the examples."""
    ruleset = load_text("mode stateless\npolicy forward drop\nforward {\n"
                        "    iif wan tcp sport { 80, 443 } dport 32768-60999 accept\n}\n")
    exposure = analyse(ruleset)
    probe = exposure.witness("tcp_syn", 4, "192.0.2.77", 40000)
    assert probe is not None and probe.sport in (80, 443) and probe.flags & SYN
    assert engine_lets_in(ruleset, probe)
    assert exposure.witness("tcp_syn", 4, "192.0.2.77", 61000) is None
