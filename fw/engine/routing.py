"""The firewall's own addresses and routes: which chain a packet takes and its `oif`.

In the lab the engine sees packets before the kernel's routing decision (docs/design.md), so it
answers "is this for me, and where would it go" itself, from the topology.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network, ip_address, ip_network

MISS = object()
MEMO_LIMIT = 65_536


@dataclass(frozen=True, slots=True)
class Route:
    family: int
    network: int
    prefixlen: int
    iface: str

    def contains(self, family: int, addr: int) -> bool:
        bits = 32 if family == 4 else 128
        shift = bits - self.prefixlen
        return family == self.family and (addr >> shift) == (self.network >> shift)


@dataclass(frozen=True)
class Routing:
    """Addresses per interface and routes, longest prefix first."""

    addresses: dict[str, tuple[tuple[int, int], ...]]  # iface -> ((family, addr), ...)
    routes: tuple[Route, ...]
    _local: frozenset = field(default=frozenset(), repr=False)
    _memo: dict = field(default_factory=dict, repr=False)

    @classmethod
    def build(cls, addresses: dict[str, list[str]], routes: list[tuple[str, str]]) -> Routing:
        """From text: {"lan": ["192.0.2.1/24", ...]} and [("0.0.0.0/0", "wan"), ...]."""
        by_iface = {
            iface: tuple(family_int(a.split("/")[0]) for a in addrs)
            for iface, addrs in addresses.items()
        }
        table = [route_of(net, iface) for net, iface in routes]
        table += [
            route_of(a, iface) for iface, addrs in addresses.items() for a in addrs if "/" in a
        ]
        table.sort(key=lambda r: -r.prefixlen)
        local = frozenset(a for addrs in by_iface.values() for a in addrs)
        return cls(by_iface, tuple(table), local)

    def route(self, family: int, addr: int) -> str | None:
        """Longest-prefix match, remembered per address (a bounded memo: lookups repeat)."""
        key = (family, addr)
        found = self._memo.get(key, MISS)
        if found is MISS:
            found = next((r.iface for r in self.routes if r.contains(family, addr)), None)
            if len(self._memo) >= MEMO_LIMIT:
                self._memo.clear()
            self._memo[key] = found
        return found

    def is_local(self, family: int, addr: int) -> bool:
        return (family, addr) in self._local

    def owner(self, family: int, addr: int) -> str | None:
        """The interface that holds this address, if it is one of the firewall's own."""
        return next((i for i, addrs in self.addresses.items() if (family, addr) in addrs), None)

    def address_of(self, iface: str | None, family: int) -> int | None:
        """The interface's first address of the family: what `masquerade` translates to."""
        return next((a for f, a in self.addresses.get(iface or "", ()) if f == family), None)

    @property
    def interfaces(self) -> list[str]:
        return list(self.addresses)


def family_int(text: str) -> tuple[int, int]:
    address = ip_address(text)
    return address.version, int(address)


def route_of(prefix: str, iface: str) -> Route:
    net: IPv4Network | IPv6Network = ip_network(prefix, strict=False)
    return Route(net.version, int(net.network_address), net.prefixlen, iface)


def default_routing() -> Routing:
    """The default lab's firewall (netns/default.yaml): the LAN behind `lan`, the rest `wan`."""
    return Routing.build(
        {
            "lan": ["192.0.2.1/24", "2001:db8:1::1/64"],
            "wan": ["203.0.113.1/24", "2001:db8:2::1/64"],
        },
        [("0.0.0.0/0", "wan"), ("::/0", "wan")],
    )
