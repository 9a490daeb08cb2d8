"""Property: the new vocabulary is only new words. Random rule sets written with address
ranges, service names and protocol names get the same verdicts, packet for packet, as the same
rules written in the contract's words (ranges as the prefixes that cover them exactly, names as
numbers)."""

from __future__ import annotations

import random
from ipaddress import IPv4Address, summarize_address_range
from pathlib import Path

import pytest

from fw import craft
from fw.core.protocols import OTHER_PROTOCOLS
from fw.core.services import service_names
from fw.dsl import load_ruleset
from fw.engine.engine import Engine

BASE = int(IPv4Address("192.0.2.0"))
SERVICES = sorted(n for n, p in service_names(6).items() if p < 2000 and "-" not in n)[:40]


def address_words(rng: random.Random) -> tuple[str, str]:
    """(new, old): a range or a prefix within 192.0.2.0/24."""
    lo = rng.randrange(256)
    hi = rng.randrange(lo, min(lo + 40, 256))
    first, last = IPv4Address(BASE + lo), IPv4Address(BASE + hi)
    if rng.random() < 0.3:
        return f"{first}/32", f"{first}/32"
    old = ", ".join(str(n) for n in summarize_address_range(first, last))
    return f"{first}-{last}", old


def port_words(rng: random.Random) -> tuple[str, str]:
    if rng.random() < 0.5:
        name = rng.choice(SERVICES)
        return name, str(service_names(6)[name])
    port = str(rng.choice([22, 80, 443, 8080, 53]))
    return port, port


def random_rule(rng: random.Random) -> tuple[str, str]:
    new, old = [], []
    if rng.random() < 0.7:
        items = [address_words(rng) for _ in range(rng.randint(1, 3))]
        neg = "!= " if rng.random() < 0.2 else ""
        field = rng.choice(["saddr", "daddr"])
        new.append(f"ip {field} {neg}{{ {', '.join(n for n, _ in items)} }}")
        old.append(f"ip {field} {neg}{{ {', '.join(o for _, o in items)} }}")
    kind = rng.random()
    if kind < 0.5:
        items = [port_words(rng) for _ in range(rng.randint(1, 3))]
        new.append(f"tcp dport {{ {', '.join(n for n, _ in items)} }}")
        old.append(f"tcp dport {{ {', '.join(o for _, o in items)} }}")
    elif kind < 0.7:
        name = rng.choice(["gre", "esp", "sctp", "ah"])
        new.append(f"proto {{ {name}, udp }}")
        old.append(f"proto {{ {OTHER_PROTOCOLS[name]}, 17 }}")
    verdict = rng.choice(["accept", "drop", "reject"])
    return " ".join([*new, verdict]), " ".join([*old, verdict])


def random_packet(rng: random.Random) -> bytes:
    src = str(IPv4Address(BASE + rng.randrange(256)))
    dst = str(IPv4Address(BASE + rng.randrange(256)) if rng.random() < 0.5 else "203.0.113.9")
    kind = rng.random()
    if kind < 0.6:
        port = int(port_words(rng)[1]) if rng.random() < 0.8 else rng.randrange(1, 2000)
        return craft.tcp(src, dst, 40000, port, "S")
    if kind < 0.8:
        return craft.udp(src, dst, 40000, rng.randrange(1, 2000))
    return craft.ip(src, dst, rng.choice([47, 50, 51, 132]), b"\0" * 8)


def engine_of(tmp_path: Path, name: str, rules: list[str]) -> Engine:
    path = tmp_path / name
    path.write_text("mode stateless\npolicy forward drop\nforward {\n" +
                    "".join(f"    {r}\n" for r in rules) + "}\n")
    return Engine(load_ruleset(str(path)))


@pytest.mark.parametrize("seed", range(12))
def test_new_words_judge_like_old_words(tmp_path: Path, seed: int) -> None:
    rng = random.Random(seed)
    pairs = [random_rule(rng) for _ in range(rng.randint(1, 12))]
    new = engine_of(tmp_path, "new.fw", [n for n, _ in pairs])
    old = engine_of(tmp_path, "old.fw", [o for _, o in pairs])
    for _ in range(200):
        raw = random_packet(rng)
        a, b = new.process(raw, iif="lan"), old.process(raw, iif="lan")
        assert (a.verdict, a.rule and a.rule.index) == (b.verdict, b.rule and b.rule.index), \
            [n for n, _ in pairs]
