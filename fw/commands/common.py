"""What several commands share: loading rules and a topology into an engine."""

from __future__ import annotations

from fw.commands.output import stderr
from fw.dsl import load_ruleset
from fw.engine.engine import Engine
from fw.engine.routing import Routing, default_routing
from fw.model import IfaceMatch, RuleSet


def routing_from(topology: str | None) -> Routing:
    """The firewall's routes: from a topology file, or the default lab's."""
    if topology is None:
        return default_routing()
    from fw.lab.engine_glue import routing_for
    from fw.lab.topology import load_topology

    return routing_for(load_topology(topology))


def engine_for(rules: str, topology: str | None = None, *, liberal: bool = False) -> Engine:
    """An engine for explain and replay: NAT's port choices seeded, so runs repeat exactly."""
    routing = routing_from(topology)
    ruleset = load_ruleset(rules)
    warn_unknown_interfaces(ruleset, routing)
    return Engine(ruleset, routing, liberal=liberal, seed=0)


def warn_unknown_interfaces(ruleset: RuleSet, routing: Routing) -> None:
    """Once on stderr per name: a rule naming an interface the topology lacks never matches
    (`fwlab check` says where each one is)."""
    known = set(routing.interfaces)
    missing = {name: match.span for rule in [*ruleset.rules(), *ruleset.nat]
               for match in rule.matches if isinstance(match, IfaceMatch)
               for name in match.names if name not in known}
    for name, span in missing.items():
        where = f"{span}: " if span else ""
        stderr.print(f"fwlab: {where}warning: interface '{name}' is not in the topology "
                     f"(it has {', '.join(sorted(known))}): rules naming it never match",
                     highlight=False, markup=False, soft_wrap=True)
