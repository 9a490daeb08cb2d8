"""Values in rule files: atoms, sets and what each use of them must be.

A value is read once (its kind: address, number or name) and converted where it is used, because
only the use knows whether `echo-request` is an ICMP type or `lan` an interface.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from ipaddress import IPv4Network, IPv6Network, ip_network
from typing import Literal

from fw.core.icmp_types import ICMP_TYPES, ICMPV6_TYPES
from fw.core.protocols import PROTOCOLS
from fw.core.vocab import CT_STATES
from fw.errors import FwlabError, Span
from fw.model import PortRange

Kind = Literal["address", "number", "name"]
KIND_BY_TOKEN: dict[str, Kind] = {
    "IPV4": "address", "IPV6": "address", "NUMBER": "number", "RANGE": "number", "NAME": "name",
}
KIND_WORDS: dict[Kind, str] = {"address": "addresses", "number": "ports/numbers", "name": "names"}


class ValueError_(FwlabError):
    """A value does not fit where it is used; the builder turns it into a diagnostic."""


@dataclass(frozen=True, slots=True)
class Atom:
    text: str
    kind: Kind
    span: Span


@dataclass(frozen=True, slots=True)
class Value:
    """A resolved value: the atoms, where it was written, and the define it came from if any."""

    atoms: tuple[Atom, ...]
    span: Span
    define: str | None = None

    @property
    def kind(self) -> Kind:
        return self.atoms[0].kind


def check_one_kind(atoms: tuple[Atom, ...], span: Span) -> None:
    kinds = {a.kind for a in atoms}
    if len(kinds) > 1:
        listed = " and ".join(sorted(KIND_WORDS[k] for k in kinds))
        raise ValueError_(f"a set may not mix kinds (here {listed})", span)


def where(value: Value) -> str:
    return f" (from ${value.define})" if value.define else ""


def blame(atom: Atom, value: Value | None) -> Span:
    """Point at the `$name` that brought a bad value in, not at its define."""
    return value.span if value is not None and value.define else atom.span


def to_prefixes(value: Value, family: int) -> tuple[IPv4Network | IPv6Network, ...]:
    return tuple(to_prefix(atom, family, value) for atom in value.atoms)


def to_prefix(atom: Atom, family: int, value: Value) -> IPv4Network | IPv6Network:
    if atom.kind != "address":
        raise ValueError_(f"'{atom.text}' is not an address{where(value)}", blame(atom, value))
    net = parse_network(atom)
    if net.version != family:
        word = "ip" if family == 4 else "ip6"
        raise ValueError_(
            f"'{atom.text}' is an IPv{net.version} address; '{word}' matches only IPv{family}"
            f"{where(value)}",
            blame(atom, value),
        )
    return net


def parse_network(atom: Atom) -> IPv4Network | IPv6Network:
    net = network_or_none(atom.text)
    return net if net is not None else network_problem(atom)


@lru_cache(maxsize=65536)
def network_or_none(text: str) -> IPv4Network | IPv6Network | None:
    """Large files repeat addresses; parsing each text once keeps 10,000-rule files fast."""
    try:
        return ip_network(text, strict=False)
    except ValueError:
        return None


def network_problem(atom: Atom) -> IPv4Network | IPv6Network:
    address, _, length = atom.text.partition("/")
    try:
        host = ip_network(address, strict=False)
    except ValueError:
        raise ValueError_(f"'{address}' is not an IP address", atom.span) from None
    if length and not (length.isdigit() and int(length) <= host.max_prefixlen):
        raise ValueError_(
            f"prefix length /{length} is out of range for IPv{host.version} "
            f"(0-{host.max_prefixlen})",
            atom.span,
        )
    raise ValueError_(f"'{atom.text}' is not an IP prefix", atom.span)


def to_port_ranges(value: Value) -> tuple[PortRange, ...]:
    return tuple(to_port_range(atom, value) for atom in value.atoms)


def to_port_range(atom: Atom, value: Value | None = None) -> PortRange:
    if atom.kind != "number":
        message = f"'{atom.text}' is not a port{where(value) if value else ''}"
        raise ValueError_(message, blame(atom, value))
    lo_text, _, hi_text = atom.text.partition("-")
    lo, hi = int(lo_text), int(hi_text or lo_text)
    for port in (lo, hi):
        if port > 65535:
            raise ValueError_(f"port {port} is out of range (0-65535)", atom.span)
    if lo > hi:
        message = f"port range {atom.text} is reversed (did you mean {hi}-{lo}?)"
        raise ValueError_(message, atom.span)
    return PortRange(lo=lo, hi=hi)


def to_names(value: Value, what: str) -> tuple[str, ...]:
    for atom in value.atoms:
        if atom.kind != "name":
            raise ValueError_(f"'{atom.text}' is not {what}{where(value)}", blame(atom, value))
    return tuple(atom.text for atom in value.atoms)


def to_icmp_types(value: Value, family: int) -> tuple[int, ...]:
    table = ICMP_TYPES if family == 4 else ICMPV6_TYPES
    word = "ICMP" if family == 4 else "ICMPv6"
    return tuple(lookup_number(atom, table, f"{word} type", 255, value) for atom in value.atoms)


def to_protocols(value: Value) -> tuple[int, ...]:
    return tuple(lookup_number(atom, PROTOCOLS, "protocol", 255, value) for atom in value.atoms)


def lookup_number(atom: Atom, table: dict[str, int], what: str, top: int, value: Value) -> int:
    """A name from `table`, or a plain number up to `top` (an extension: `proto 47`)."""
    if atom.kind == "number" and atom.text.isdigit() and int(atom.text) <= top:
        return int(atom.text)
    if atom.kind == "name" and atom.text in table:
        return table[atom.text]
    hint = suggest(atom.text, table)
    raise ValueError_(f"unknown {what} '{atom.text}'{hint}{where(value)}", blame(atom, value))


def to_ct_states(values: list[Value]) -> tuple[str, ...]:
    states = []
    for value in values:
        for atom in value.atoms:
            if atom.text not in CT_STATES:
                hint = suggest(atom.text, dict.fromkeys(CT_STATES))
                raise ValueError_(f"unknown connection state '{atom.text}'{hint}", atom.span)
            states.append(atom.text)
    return tuple(states)


def suggest(word: str, known: dict) -> str:
    from difflib import get_close_matches

    close = get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
