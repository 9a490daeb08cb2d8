"""The interface mapping of an attachment: the rule file's interface names -> the devices of the
namespace fwlab runs in front of (`fwlab attach NS --iface lan=eth1 --iface wan=eth2`).

A rule file says `iif lan`; the namespace's device is eth1. The mapping is kept as
{"lan": "eth1", ...} (in the state's `attached` part, fw/lab/attachment.py) and used in exactly
three places, each through a function here:

- the engine daemon names each queued packet's interfaces by the rule file's names
  (`aliases`, handed to queue_backend.IfNames), so `iif lan` matches a packet from eth1;
- the daemon's route lookup is the namespace's own routing table with devices renamed the same
  way (`namespace_routing`): routing comes from the namespace, not from a topology;
- the kernel engine loads the exported rules with the devices' names in them (`rename`).

A device the mapping does not name keeps its own name on every side, so a rule file may also
name a device directly (`iif eth0`). A lab built by `fwlab up` maps every firewall interface to
itself: its devices carry the topology's names.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from fw.errors import LabError
from fw.model import IfaceMatch, NatRule, Rule, RuleSet

if TYPE_CHECKING:
    from fw.engine.routing import Routing

__all__ = ["aliases", "namespace_devices", "namespace_routing", "parse", "rename",
           "unmapped_warnings", "used_names"]

NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,14}$")  # a rule file's name or a device's
RTN_UNICAST, RT_TABLE_MAIN, RT_SCOPE_UNIVERSE = 1, 254, 0


def parse(specs: Sequence[str]) -> dict[str, str]:
    """`--iface NAME=DEV` options as {name: device}; a malformed, repeated or ambiguous one is a
    one-line error naming it."""
    mapping: dict[str, str] = {}
    for spec in specs:
        name, eq, dev = spec.partition("=")
        if not eq or not NAME_RE.match(name) or not NAME_RE.match(dev) or dev == "lo":
            raise LabError(f"--iface {spec!r}: give NAME=DEVICE, e.g. --iface lan=eth1")
        if name in mapping:
            raise LabError(f"--iface {spec!r}: {name} is already mapped to {mapping[name]}")
        if dev in mapping.values():
            raise LabError(f"--iface {spec!r}: device {dev} is already mapped")
        mapping[name] = dev
    if not mapping:
        raise LabError("give the interfaces: --iface NAME=DEVICE for each name the rules use")
    return mapping


def aliases(mapping: dict[str, str]) -> dict[str, str]:
    """device -> rule file's name, for the devices the mapping renames."""
    return {dev: name for name, dev in mapping.items() if dev != name}


def used_names(ruleset: RuleSet) -> set[str]:
    """Every interface name the rule file's filter and NAT rules match on."""
    rules: Iterable[Rule | NatRule] = (*ruleset.rules(), *ruleset.nat)
    return {n for r in rules for m in r.matches if isinstance(m, IfaceMatch) for n in m.names}


def unmapped_warnings(mapping: dict[str, str], ruleset: RuleSet,
                      devices: Iterable[str]) -> list[str]:
    """What looks like a mistake but may be meant: a name mapped that the rules never use, a name
    the rules use that is neither mapped nor a device of the namespace."""
    used, devs = used_names(ruleset), set(devices)
    out = [f"--iface {n}={d}: the rules never name {n}" for n, d in mapping.items()
           if n not in used]
    out += [f"the rules name interface {n!r}, which no --iface maps (and {n} is no device of the "
            "namespace): rules that match on it never match"
            for n in sorted(used - set(mapping) - devs)]
    return out


def rename(ruleset: RuleSet, mapping: dict[str, str] | None) -> RuleSet:
    """The rule set with every interface name replaced by its device (for the kernel, which
    knows only devices); the rule set itself when nothing is renamed."""
    devices = {n: d for n, d in (mapping or {}).items() if n != d}
    if not devices:
        return ruleset

    def match(m: Any) -> Any:
        if not isinstance(m, IfaceMatch):
            return m
        return m.model_copy(update={"names": tuple(devices.get(n, n) for n in m.names)})

    def rule(r: Any) -> Any:
        return r.model_copy(update={"matches": tuple(map(match, r.matches))})

    return ruleset.model_copy(update={
        "chains": {c: tuple(map(rule, rs)) for c, rs in ruleset.chains.items()},
        "nat": tuple(map(rule, ruleset.nat))})


# -- the namespace ------------------------------------------------------------------------------


def namespace_devices(ns: str | None) -> dict[str, int]:
    """The namespace's devices, name -> index (None: this process's namespace)."""
    from pyroute2 import IPRoute

    kw: dict[str, Any] = {"netns": ns, "flags": 0} if ns else {}
    try:
        with IPRoute(**kw) as ipr:
            return {link.get_attr("IFLA_IFNAME"): link["index"] for link in ipr.get_links()}
    except OSError as exc:
        raise LabError(f"namespace {ns}: cannot list its devices: {exc}") from None


def namespace_routing(ns: str | None, mapping: dict[str, str]) -> Routing:
    """The namespace's addresses and main routing table, devices renamed to the rule file's
    names, as the engine's Routing. Link-local addresses and routes are left out, as a lab's
    topology has none (the engine's route lookup is for routed traffic)."""
    from pyroute2 import IPRoute

    from fw.engine.routing import Routing

    kw: dict[str, Any] = {"netns": ns, "flags": 0} if ns else {}
    with IPRoute(**kw) as ipr:
        names = {link["index"]: link.get_attr("IFLA_IFNAME") for link in ipr.get_links()}
        renamed = {i: aliases(mapping).get(n, n) for i, n in names.items()}
        addresses: dict[str, list[str]] = {}
        for a in ipr.get_addr():
            if a["scope"] == RT_SCOPE_UNIVERSE and names.get(a["index"]) != "lo":
                addresses.setdefault(renamed[a["index"]], []).append(
                    f"{a.get_attr('IFA_ADDRESS')}/{a['prefixlen']}")
        routes = [r for r in (_route(m, renamed) for m in ipr.get_routes(table=RT_TABLE_MAIN))
                  if r is not None]
    return Routing.build(addresses, routes)


def _route(msg: Any, renamed: dict[int, str]) -> tuple[str, str] | None:
    """(prefix, interface) of one unicast route of the main table; None for others."""
    if msg["type"] != RTN_UNICAST or msg.get_attr("RTA_TABLE", RT_TABLE_MAIN) != RT_TABLE_MAIN:
        return None
    oif = msg.get_attr("RTA_OIF")
    if oif is None:  # multipath: the first hop's device
        hops = msg.get_attr("RTA_MULTIPATH") or []
        oif = hops[0]["oif"] if hops else None
    if oif is None or oif not in renamed or renamed[oif] == "lo":
        return None
    family = "0.0.0.0" if msg["family"] == 2 else "::"
    net = ipaddress.ip_network(f"{msg.get_attr('RTA_DST') or family}/{msg['dst_len']}")
    if net.is_link_local or net.is_multicast:
        return None
    return str(net), renamed[oif]
