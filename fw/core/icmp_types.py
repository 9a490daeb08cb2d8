"""ICMP and ICMPv6 type and code names, as nftables spells them.

One table for the rules language (`icmp type echo-request`), `explain`'s packet descriptions,
the nft exporter and the reject builder, so a name means the same number everywhere.
"""

from __future__ import annotations

ICMP_TYPES: dict[str, int] = {
    "echo-reply": 0,
    "destination-unreachable": 3,
    "source-quench": 4,
    "redirect": 5,
    "echo-request": 8,
    "router-advertisement": 9,
    "router-solicitation": 10,
    "time-exceeded": 11,
    "parameter-problem": 12,
    "timestamp-request": 13,
    "timestamp-reply": 14,
    "info-request": 15,
    "info-reply": 16,
    "address-mask-request": 17,
    "address-mask-reply": 18,
}

ICMPV6_TYPES: dict[str, int] = {
    "destination-unreachable": 1,
    "packet-too-big": 2,
    "time-exceeded": 3,
    "parameter-problem": 4,
    "echo-request": 128,
    "echo-reply": 129,
    "mld-listener-query": 130,
    "mld-listener-report": 131,
    "mld-listener-done": 132,
    "mld-listener-reduction": 132,
    "nd-router-solicit": 133,
    "nd-router-advert": 134,
    "nd-neighbor-solicit": 135,
    "nd-neighbor-advert": 136,
    "nd-redirect": 137,
    "router-renumbering": 138,
    "ind-neighbor-solicit": 141,
    "ind-neighbor-advert": 142,
    "mld2-listener-report": 143,
}

# `reject with icmp type X` / `icmpv6 type X` codes (nft's icmp_code / icmpv6_code names)
ICMP_CODES: dict[str, int] = {
    "net-unreachable": 0,
    "host-unreachable": 1,
    "prot-unreachable": 2,
    "port-unreachable": 3,
    "frag-needed": 4,
    "net-prohibited": 9,
    "host-prohibited": 10,
    "admin-prohibited": 13,
}

ICMPV6_CODES: dict[str, int] = {
    "no-route": 0,
    "admin-prohibited": 1,
    "addr-unreachable": 3,
    "port-unreachable": 4,
    "policy-fail": 5,
    "reject-route": 6,
}


def type_name(family: int, number: int) -> str:
    """The nft name of a type number (the first one, for 132), or the number as text."""
    table = ICMP_TYPES if family == 4 else ICMPV6_TYPES
    return next((name for name, value in table.items() if value == number), str(number))


def code_name(family: int, number: int) -> str:
    """The nft name of a destination-unreachable code, or the number as text."""
    table = ICMP_CODES if family == 4 else ICMPV6_CODES
    return next((name for name, value in table.items() if value == number), str(number))
