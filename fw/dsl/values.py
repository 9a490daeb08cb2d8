"""Values in rule files: atoms, sets and what each use of them must be.

A value is read once (its kind: address, number or name) and converted where it is used, because
only the use knows whether `echo-request` is an ICMP type or `lan` an interface.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from ipaddress import (
    IPv4Address,
    IPv4Network,
    IPv6Address,
    IPv6Network,
    ip_address,
    ip_network,
)
from typing import Literal

from fw.core.icmp_types import ICMP_TYPES, ICMPV6_TYPES
from fw.core.protocols import PROTOCOL_NAMES, TCP
from fw.core.services import service_names, service_port
from fw.core.vocab import CT_STATES, CtStatus
from fw.errors import FwlabError, Span
from fw.model import AddrRange, PortRange

Kind = Literal["address", "number", "name"]
KIND_BY_TOKEN: dict[str, Kind] = {
    "IPV4": "address", "IPV6": "address", "NUMBER": "number", "RANGE": "number", "NAME": "name",
    "ADDR_RANGE": "address",
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
    """Addresses never mix with other kinds; names and numbers may (`{ ssh, 8080 }`,
    `proto { tcp, 47 }`): their use checks each one."""
    kinds = {a.kind for a in atoms}
    if len(kinds) > 1 and "address" in kinds:
        listed = " and ".join(sorted(KIND_WORDS[k] for k in kinds))
        raise ValueError_(f"a set may not mix kinds (here {listed})", span)


def where(value: Value) -> str:
    return f" (from ${value.define})" if value.define else ""


def blame(atom: Atom, value: Value | None) -> Span:
    """Point at the `$name` that brought a bad value in, not at its define."""
    return value.span if value is not None and value.define else atom.span


def to_prefixes(value: Value, family: int) -> tuple[IPv4Network | IPv6Network | AddrRange, ...]:
    return tuple(to_prefix(atom, family, value) for atom in value.atoms)


def to_prefix(atom: Atom, family: int, value: Value) -> IPv4Network | IPv6Network | AddrRange:
    if atom.kind != "address":
        raise ValueError_(f"'{atom.text}' is not an address{where(value)}", blame(atom, value))
    net = parse_range(atom) if is_range(atom.text) else parse_network(atom)
    if net.version != family:
        word = "ip" if family == 4 else "ip6"
        raise ValueError_(
            f"'{atom.text}' is an IPv{net.version} address; '{word}' matches only IPv{family}"
            f"{where(value)}",
            blame(atom, value),
        )
    return net


def is_range(text: str) -> bool:
    return "-" in text


def parse_range(atom: Atom) -> AddrRange:
    """`lo-hi`, both addresses of one family, lo first."""
    lo_text, hi_text = atom.text.split("-")
    lo, hi = (parse_address(text, atom) for text in (lo_text, hi_text))
    if lo.version != hi.version:
        raise ValueError_(f"address range {atom.text} mixes IPv4 and IPv6", atom.span)
    if lo > hi:
        raise ValueError_(f"address range {atom.text} is reversed (did you mean "
                          f"{hi}-{lo}?)", atom.span)
    return AddrRange(lo=lo, hi=hi)


def parse_address(text: str, atom: Atom) -> IPv4Address | IPv6Address:
    try:
        return ip_address(text)
    except ValueError:
        raise ValueError_(f"'{text}' is not an IP address", atom.span) from None


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


@lru_cache(maxsize=65536)
def exact_prefix(text: str) -> bool:
    """No host bits set below the prefix length (`192.0.2.0/24`, not `192.0.2.1/24`)."""
    try:
        ip_network(text, strict=True)
    except ValueError:
        return False
    return True


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


def to_port_ranges(value: Value, proto: int = TCP) -> tuple[PortRange, ...]:
    return tuple(to_port_range(atom, value, proto) for atom in value.atoms)


def to_port_range(atom: Atom, value: Value | None = None, proto: int = TCP) -> PortRange:
    if atom.kind == "name":
        port = service(atom, value, proto)
        return PortRange(lo=port, hi=port)
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


def service(atom: Atom, value: Value | None, proto: int) -> int:
    """A service name's port (`ssh` is 22), from the table shipped with fwlab."""
    port = service_port(atom.text, proto)
    if port is not None:
        return port
    word = "tcp" if proto == TCP else "udp"
    hint = suggest(atom.text, service_names(proto))
    message = f"unknown {word} service '{atom.text}'{hint}{where(value) if value else ''}"
    raise ValueError_(message, blame(atom, value))


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
    return tuple(lookup_number(atom, PROTOCOL_NAMES, "protocol", 255, value)
                 for atom in value.atoms)


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


def to_ct_statuses(values: list[Value]) -> tuple[CtStatus, ...]:
    statuses = []
    for value in values:
        for atom in value.atoms:
            if atom.text not in tuple(CtStatus):
                hint = suggest(atom.text, dict.fromkeys(CtStatus))
                raise ValueError_(f"unknown connection status '{atom.text}'{hint} (fwlab knows "
                                  "the NAT bits: snat, dnat)", atom.span)
            statuses.append(CtStatus(atom.text))
    return tuple(statuses)


def suggest(word: str, known: dict) -> str:
    from difflib import get_close_matches

    close = get_close_matches(word, list(known), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""
