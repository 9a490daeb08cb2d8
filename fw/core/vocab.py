"""The words that cross layers, as enums: a value compared in three modules is one name here.

They are `StrEnum`s, so they dump, print and compare as the strings the rules language and the
JSON outputs have always used (`"established"`, `"endpoint-independent"`), while code names them.
"""

from __future__ import annotations

from enum import StrEnum


class CtState(StrEnum):
    """Linux's ctstate, as `ct state` tests it."""

    NEW = "new"
    ESTABLISHED = "established"
    RELATED = "related"
    INVALID = "invalid"
    UNTRACKED = "untracked"  # never tracked: neighbour discovery and MLD (Linux's noct_valid_new)


CT_STATES: tuple[CtState, ...] = tuple(CtState)


class CtStatus(StrEnum):
    """The NAT bits of Linux's ct status, as `ct status dnat` tests them."""

    SNAT = "snat"
    DNAT = "dnat"


CT_STATUS_BITS: dict[CtStatus, int] = {CtStatus.SNAT: 1, CtStatus.DNAT: 2}


class NatBehaviour(StrEnum):
    """RFC 4787's mapping and filtering behaviours."""

    ENDPOINT_INDEPENDENT = "endpoint-independent"
    ADDRESS_DEPENDENT = "address-dependent"
    ADDRESS_PORT_DEPENDENT = "address-port-dependent"


class Verdict(StrEnum):
    ACCEPT = "accept"
    DROP = "drop"
    REJECT = "reject"


class Hook(StrEnum):
    """Where the engine is handed a packet (netfilter's hooks it sees)."""

    PREROUTING = "prerouting"
    INPUT = "input"
    FORWARD = "forward"
    OUTPUT = "output"
