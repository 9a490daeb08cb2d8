"""Topology files: the hosts, segments, addresses and routes of a lab (YAML -> pydantic models).

A topology names a firewall node (a namespace with forwarding on, whose rule file the engine runs)
and hosts. Every interface sits on a named *segment*; a segment with exactly two members becomes a
veth pair, one with more members becomes a Linux bridge in a namespace of its own (see netns.py).

    name: default
    firewall:
      host: fw
      rules: ../rules/stateful-web.fw       # relative to the yaml file
      default: wan                          # default route of the engine's route lookup
      conntrack_max: 262144                 # the engine's connection table limit (optional)
      interfaces:
        lan: {segment: lan, addresses: [192.0.2.1/24, 2001:db8:1::1/64]}
        wan: {segment: wan, addresses: [203.0.113.1/24, 2001:db8:2::1/64]}
    hosts:
      client:
        interfaces: {eth0: {segment: lan, addresses: [192.0.2.2/24, 2001:db8:1::2/64]}}
        routes: [{to: default, via: 192.0.2.1}, {to: default, via: 2001:db8:1::1}]
        sysctls: {net.ipv4.ip_default_ttl: 64}

Validation errors are raised as one line naming the file and the key path:
``netns/x.yaml: hosts.client.interfaces.eth0.addresses[0]: '192.0.2.300/24' is not an IP
interface address``.
"""

from __future__ import annotations

import ipaddress
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    PlainSerializer,
    ValidationError,
    field_validator,
    model_validator,
)

from fw.errors import TopologyError
from fw.userfiles import UnreadableFile, read_text

__all__ = [
    "DEFAULT_CONNTRACK_MAX",
    "DOCUMENTATION_NETWORKS",
    "Firewall",
    "Host",
    "Interface",
    "Route",
    "Topology",
    "TopologyError",
    "default_topology",
    "default_topology_path",
    "load_topology",
    "parse_topology",
]

IPInterface = ipaddress.IPv4Interface | ipaddress.IPv6Interface
IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

DOCUMENTATION_NETWORKS: tuple[IPNetwork, ...] = (
    ipaddress.ip_network("192.0.2.0/24"),
    ipaddress.ip_network("198.51.100.0/24"),
    ipaddress.ip_network("203.0.113.0/24"),
    ipaddress.ip_network("2001:db8::/32"),
)

DEFAULT_CONNTRACK_MAX = 262_144
MAX_CONNTRACK_MAX = 1 << 24
_NAME_RE = re.compile(r"^[a-z][a-z0-9-]{0,30}$")  # hosts and segments
_IFNAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_-]{0,14}$")  # Linux IFNAMSIZ - 1 = 15
_RESERVED_IFNAMES = {"lo", "all", "default"}


def _parse_interface(v: Any) -> Any:
    if isinstance(v, ipaddress.IPv4Interface | ipaddress.IPv6Interface):
        return v
    try:
        if not isinstance(v, str) or "/" not in v:
            raise ValueError
        return ipaddress.ip_interface(v)
    except ValueError:
        raise ValueError(f"{v!r} is not an IP interface address (address/prefix length)") from None


def _parse_address(v: Any) -> Any:
    if isinstance(v, ipaddress.IPv4Address | ipaddress.IPv6Address):
        return v
    try:
        if not isinstance(v, str):
            raise ValueError
        return ipaddress.ip_address(v)
    except ValueError:
        raise ValueError(f"{v!r} is not an IP address") from None


def _parse_destination(v: Any) -> Any:
    if v == "default" or isinstance(v, ipaddress.IPv4Network | ipaddress.IPv6Network):
        return v
    try:
        if not isinstance(v, str):
            raise ValueError
        return ipaddress.ip_network(v, strict=True)
    except ValueError:
        raise ValueError(
            f"{v!r} is not 'default' or a network prefix (host bits must be zero)"
        ) from None


IfaceAddress = Annotated[
    IPInterface, BeforeValidator(_parse_interface), PlainSerializer(str, return_type=str)
]
HopAddress = Annotated[
    IPAddress, BeforeValidator(_parse_address), PlainSerializer(str, return_type=str)
]
Destination = Annotated[
    Literal["default"] | IPNetwork,
    BeforeValidator(_parse_destination),
    PlainSerializer(str, return_type=str),
]
SysctlValue = Annotated[int | str, PlainSerializer(str, return_type=str)]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Route(_Model):
    """A static route. `to: default` with a `via` of either family is that family's default."""

    to: Destination
    via: HopAddress | None = None
    dev: str | None = None

    @model_validator(mode="after")
    def _check(self) -> Route:
        if self.via is None and self.dev is None:
            raise ValueError("a route needs 'via' or 'dev' (or both)")
        if self.via is not None and self.to != "default" and self.to.version != self.via.version:
            raise ValueError(f"route to {self.to} via {self.via}: address families differ")
        return self

    def family(self) -> int | None:
        """4, 6, or None for `to: default` with only `dev` (then it applies to both families)."""
        if self.to != "default":
            return self.to.version
        return self.via.version if self.via is not None else None

    def destinations(self) -> list[IPNetwork]:
        """The concrete prefixes this route covers (a dev-only default covers both families)."""
        if self.to != "default":
            return [self.to]
        fam = self.family()
        nets = {4: ipaddress.ip_network("0.0.0.0/0"), 6: ipaddress.ip_network("::/0")}
        return [nets[fam]] if fam else [nets[4], nets[6]]


class Interface(_Model):
    segment: str
    addresses: list[IfaceAddress] = Field(default_factory=list)
    mtu: int | None = Field(default=None, ge=1280, le=65535)

    @field_validator("segment")
    @classmethod
    def _segment_name(cls, v: str) -> str:
        if not _NAME_RE.match(v):
            raise ValueError(f"{v!r} is not a segment name (lower case letters, digits, '-')")
        return v


def _check_sysctls(v: dict[str, Any]) -> dict[str, Any]:
    for key in v:
        # Only net.* sysctls are per network namespace. Anything else written from inside a
        # namespace would change the machine itself, so it is refused here.
        if not re.match(r"^net\.[A-Za-z0-9_.\-]+$", key) or ".." in key:
            raise ValueError(
                f"@[{key!r}]: only net.* sysctls (per network namespace) may be set in a lab"
            )
    return v


class Host(_Model):
    interfaces: dict[str, Interface]
    routes: list[Route] = Field(default_factory=list)
    sysctls: dict[str, SysctlValue] = Field(default_factory=dict)

    @field_validator("interfaces")
    @classmethod
    def _ifnames(cls, v: dict[str, Interface]) -> dict[str, Interface]:
        if not v:
            raise ValueError("a host needs at least one interface")
        for name in v:
            if not _IFNAME_RE.match(name) or name in _RESERVED_IFNAMES:
                raise ValueError(
                    f"@{name}: not an interface name (letter first, at most 15 of "
                    "letters, digits, '_' and '-'; not lo/all/default)"
                )
        return v

    @field_validator("sysctls")
    @classmethod
    def _sysctl_keys(cls, v: dict[str, Any]) -> dict[str, Any]:
        return _check_sysctls(v)

    @model_validator(mode="after")
    def _routes_reachable(self) -> Host:
        for i, route in enumerate(self.routes):
            if route.dev is not None and route.dev not in self.interfaces:
                raise ValueError(
                    f"@routes[{i}].dev: {route.dev!r} is not an interface of this host"
                )
            if route.via is not None and self.route_dev(route) is None:
                raise ValueError(
                    f"@routes[{i}].via: gateway {route.via} is not on a connected network"
                    " of this host"
                )
        return self

    def route_dev(self, route: Route) -> str | None:
        """The interface a route leaves by: its `dev`, or the one whose network holds `via`."""
        if route.dev is not None:
            return route.dev
        for name, iface in self.interfaces.items():
            for addr in iface.addresses:
                if route.via is not None and route.via in addr.network:
                    return name
        return None

    def addresses(self) -> dict[str, list[IPAddress]]:
        return {n: [a.ip for a in i.addresses] for n, i in self.interfaces.items()}


class Firewall(Host):
    """The firewall node: a host whose namespace forwards and whose packets go to the engine."""

    host: str = "fw"
    rules: Path | None = None
    default: str | None = Field(
        default=None, description="interface of the default route for the engine's route lookup"
    )
    conntrack_max: int | None = Field(
        default=None, ge=1, le=MAX_CONNTRACK_MAX,
        description="entries the engine's connection table holds (`fwlab up --conntrack-max`)",
    )

    @model_validator(mode="after")
    def _default_iface(self) -> Firewall:
        if self.default is not None and self.default not in self.interfaces:
            raise ValueError(f"@default: {self.default!r} is not an interface of the firewall")
        return self


class Topology(_Model):
    name: str = "lab"
    description: str = ""
    firewall: Firewall
    hosts: dict[str, Host] = Field(default_factory=dict)
    source: Path | None = Field(default=None, exclude=True, description="the file it came from")

    @model_validator(mode="after")
    def _check(self) -> Topology:
        names = [self.firewall.host, *self.hosts]
        for name in names:
            if not _NAME_RE.match(name):
                raise ValueError(
                    f"host name {name!r}: lower case letter first, then letters, digits, '-'"
                    " (at most 31)"
                )
        if self.firewall.host in self.hosts:
            raise ValueError(f"host {self.firewall.host!r} is both the firewall and a host")
        for seg, members in self.segments().items():
            if len(members) < 2:
                ((host, ifname),) = members
                raise ValueError(
                    f"segment {seg!r} has one member ({host}.{ifname}); a segment links two or "
                    "more interfaces"
                )
            hosts = [h for h, _ in members]
            if len(set(hosts)) != len(hosts):
                raise ValueError(f"segment {seg!r}: a host has two interfaces on it")
        seen: dict[IPAddress, str] = {}
        for host, node in self.nodes().items():
            for ifname, iface in node.interfaces.items():
                for addr in iface.addresses:
                    where = f"{host}.{ifname}"
                    if addr.ip in seen:
                        raise ValueError(
                            f"address {addr.ip} is on both {seen[addr.ip]} and {where}"
                        )
                    seen[addr.ip] = where
        return self

    # -- structure -------------------------------------------------------------------------

    def nodes(self) -> dict[str, Host]:
        """Every node, firewall first: host name -> Host (the Firewall is a Host)."""
        return {self.firewall.host: self.firewall, **self.hosts}

    def segments(self) -> dict[str, list[tuple[str, str]]]:
        """segment -> [(host, interface name)], in file order (firewall first)."""
        out: dict[str, list[tuple[str, str]]] = {}
        for host, node in self.nodes().items():
            for ifname, iface in node.interfaces.items():
                out.setdefault(iface.segment, []).append((host, ifname))
        return out

    @property
    def conntrack_max(self) -> int:
        """The connection table limit the lab's engine runs with."""
        return self.firewall.conntrack_max or DEFAULT_CONNTRACK_MAX

    @property
    def rules_file(self) -> Path | None:
        """The firewall's rule file, resolved against the topology file's directory."""
        rules = self.firewall.rules
        if rules is None or rules.is_absolute() or self.source is None:
            return rules
        return (self.source.parent / rules).resolve()

    def non_documentation_addresses(self) -> list[str]:
        """Addresses outside the documentation ranges (a user's own topology may use any)."""
        out = []
        for host, node in self.nodes().items():
            for ifname, iface in node.interfaces.items():
                for addr in iface.addresses:
                    if not any(
                        addr.ip in net
                        for net in DOCUMENTATION_NETWORKS
                        if net.version == addr.version
                    ):
                        out.append(f"{host}.{ifname}: {addr}")
        return out

    # -- what the engine needs ----------------------------------------------------------------

    def firewall_addresses(self) -> dict[str, list[IPAddress]]:
        """The firewall's own addresses: interface name -> [ip]."""
        return self.firewall.addresses()

    def firewall_routes(self) -> list[tuple[IPNetwork, str]]:
        """The firewall's routing table as (prefix, interface), longest prefix first.

        Connected prefixes from its interface addresses, its static routes, and a default
        route (both families) to `firewall.default` when given. Among equal prefixes the
        first one listed wins, as a stable sort keeps file order."""
        fw = self.firewall
        table: list[tuple[IPNetwork, str]] = []
        for ifname, iface in fw.interfaces.items():
            for addr in iface.addresses:
                table.append((addr.network, ifname))
        for route in fw.routes:
            dev = fw.route_dev(route)
            assert dev is not None  # validated
            for net in route.destinations():
                table.append((net, dev))
        if fw.default is not None:
            table.append((ipaddress.ip_network("0.0.0.0/0"), fw.default))
            table.append((ipaddress.ip_network("::/0"), fw.default))
        seen: set[IPNetwork] = set()
        unique = []
        for net, dev in table:
            if net not in seen:
                seen.add(net)
                unique.append((net, dev))
        unique.sort(key=lambda e: (e[0].version, -e[0].prefixlen))
        return unique

    def route_lookup(self, address: str | IPAddress) -> str | None:
        """Longest-prefix match of `address` in firewall_routes(): the output interface."""
        ip = ipaddress.ip_address(address)
        for net, dev in self.firewall_routes():
            if net.version == ip.version and ip in net:
                return dev
        return None


# -- loading --------------------------------------------------------------------------------


def _loc(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part.startswith(("function-", "lax-or-", "union[", "literal[")) or part in (
            "is-instance[IPv4Network]",
            "is-instance[IPv6Network]",
        ):
            continue  # pydantic's internal validator names, not keys of the file
        else:
            out += ("." if out else "") + part
    return out


def _one_line(err: dict[str, Any]) -> str:
    loc = _loc(tuple(err.get("loc", ())))
    kind = err.get("type", "")
    msg = str(err.get("msg", ""))
    if kind == "extra_forbidden":
        msg = "unknown key"
    elif kind == "missing":
        msg = "required key is missing"
    elif msg.startswith("Value error, "):
        msg = msg[len("Value error, ") :]
    elif msg.startswith("Assertion failed, "):
        msg = msg[len("Assertion failed, ") :]
    if msg.startswith("@") and ": " in msg:
        # a validator's error about a key below the one pydantic reports: "@sub.path: message"
        sub, msg = msg[1:].split(": ", 1)
        loc = f"{loc}.{sub}" if loc and not sub.startswith("[") else f"{loc}{sub}"
    return f"{loc}: {msg}" if loc else msg


def _validation_message(where: str, exc: ValidationError) -> str:
    errors = exc.errors()
    # Several union branches report the same key; keep the first error per key path.
    firsts: dict[str, str] = {}
    for err in errors:
        line = _one_line(err)
        key = line.split(": ", 1)[0]
        firsts.setdefault(key, line)
    lines = list(firsts.values())
    more = f" (and {len(lines) - 1} more)" if len(lines) > 1 else ""
    return f"{where}: {lines[0]}{more}"


def parse_topology(data: Any, source: str | Path | None = None) -> Topology:
    """Validate already-parsed YAML/JSON data. `source` names the file in error messages and is
    the base for the relative rule file path."""
    where = str(source) if source is not None else "<topology>"
    if not isinstance(data, dict):
        raise TopologyError(f"{where}: the top level must be a mapping")
    payload = dict(data)
    if source is not None:
        payload["source"] = Path(source)
    try:
        return Topology.model_validate(payload)
    except ValidationError as exc:
        raise TopologyError(_validation_message(where, exc)) from None


def load_topology(path: str | Path) -> Topology:
    """Read and validate a topology file; every problem is a one-line TopologyError."""
    path = Path(path)
    try:
        text = read_text(path)  # a regular file of at most 16 MB, never a FIFO or a device
    except UnreadableFile as exc:
        raise TopologyError(f"{path}: cannot read: {exc.why}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        pos = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise TopologyError(f"{path}{pos}: not valid YAML: {problem}") from None
    return parse_topology(data, source=path)


def default_topology_path() -> Path:
    import fw

    return Path(fw.__file__).parent.parent / "netns" / "default.yaml"


def default_topology() -> Topology:
    """The default lab: client on the LAN, server and attacker on the internet side, fw between."""
    return load_topology(default_topology_path())
