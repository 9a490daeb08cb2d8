"""What several commands share: loading rules and a topology into an engine."""

from __future__ import annotations

from fw.dsl import load_ruleset
from fw.engine.engine import Engine
from fw.engine.routing import Routing, default_routing


def routing_from(topology: str | None) -> Routing:
    """The firewall's routes: from a topology file, or the default lab's."""
    if topology is None:
        return default_routing()
    from fw.lab.engine_glue import routing_for
    from fw.lab.topology import load_topology

    return routing_for(load_topology(topology))


def engine_for(rules: str, topology: str | None = None, *, liberal: bool = False) -> Engine:
    """An engine for explain and replay: NAT's port choices seeded, so runs repeat exactly."""
    return Engine(load_ruleset(rules), routing_from(topology), liberal=liberal, seed=0)
