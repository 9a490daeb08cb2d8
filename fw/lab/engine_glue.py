"""What the engine needs from a lab: the firewall's routing table and the rules to run.

The engine sees packets in prerouting, before the kernel routes them (docs/design.md), so it
does its own route lookup. That table must be the one the kernel of the firewall namespace
has; both are built from the same topology (netns.up installs it, `routing_for` hands it to
the engine).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from fw.errors import LabError, RulesError

if TYPE_CHECKING:
    from fw.engine.routing import Routing
    from fw.lab.topology import Topology
    from fw.model import RuleSet

__all__ = ["load_rules", "render_diagnostics", "routing_for", "rules_path"]


def routing_for(topology: Topology) -> Routing:
    """The firewall's addresses (with prefix lengths) and routes, as the engine's Routing."""
    from fw.engine.routing import Routing

    addresses = {
        ifname: [str(addr) for addr in iface.addresses]
        for ifname, iface in topology.firewall.interfaces.items()
    }
    routes = [(str(net), dev) for net, dev in topology.firewall_routes()]
    return Routing.build(addresses, routes)


def rules_path(topology: Topology | None, override: str | Path | None = None) -> Path:
    """The rule file a lab runs: `--rules` when given, else the topology's, as an absolute path
    (the daemon runs in another directory than the command that started it)."""
    path = Path(override) if override is not None else (topology and topology.rules_file)
    if path is None:
        where = (topology and topology.source) or "the topology"
        raise LabError(f"{where} names no rule file for the firewall: pass --rules FILE")
    path = path.expanduser().resolve()
    if not path.is_file():
        raise LabError(f"rule file {path} does not exist")
    return path


def load_rules(path: str | Path) -> RuleSet:
    """The rule set of `path`; a RulesError (all diagnostics attached) when it has errors."""
    from fw.dsl import load_ruleset

    return load_ruleset(str(path))


def render_diagnostics(exc: RulesError) -> list[str]:
    """Each diagnostic in the compiler form (`file:line:col: error: ...` with source and caret);
    the error itself when it carries none."""
    rendered = [d.render() for d in exc.diagnostics if getattr(d, "severity", "error") == "error"]
    return rendered or [str(exc)]
