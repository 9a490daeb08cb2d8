"""Service names for ports (`tcp dport ssh`), from the table shipped in fw/core/data.

The table is Debian netbase's /etc/services (IANA names) copied into the package, so a rule
file means the same ports on every machine, whatever its own /etc/services says.
"""

from __future__ import annotations

from functools import cache
from importlib.resources import files

from fw.core.protocols import TCP, UDP

PROTOCOL_WORDS = {"tcp": TCP, "udp": UDP}


@cache
def services() -> dict[int, dict[str, int]]:
    """Per protocol number: every name and alias -> port."""
    table: dict[int, dict[str, int]] = {TCP: {}, UDP: {}}
    text = files("fw.core").joinpath("data/services.txt").read_text()
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        name, where, *aliases = line.split()
        port, _, proto = where.partition("/")
        if proto in PROTOCOL_WORDS:
            for word in (name, *aliases):
                table[PROTOCOL_WORDS[proto]].setdefault(word, int(port))
    return table


def service_port(name: str, proto: int) -> int | None:
    """The port of a service name for TCP or UDP; None when the table has no such name."""
    return services().get(proto, {}).get(name)


def service_names(proto: int) -> dict[str, int]:
    return services().get(proto, {})
