"""What several commands share: loading rules and a topology into an engine."""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from fw.commands.output import stderr
from fw.dsl import load_ruleset
from fw.engine.engine import Engine
from fw.engine.routing import Routing, default_routing
from fw.errors import LabError, Span
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


def unknown_interfaces(ruleset: RuleSet, known: Iterable[str]) -> dict[str, Span | None]:
    """Each interface a rule names that `known` lacks, with where it is first named."""
    have = set(known)
    missing: dict[str, Span | None] = {}
    for rule in [*ruleset.rules(), *ruleset.nat]:
        for match in rule.matches:
            if isinstance(match, IfaceMatch):
                for name in match.names:
                    if name not in have:
                        missing.setdefault(name, match.span)
    return missing


class KnownInterfaces(NamedTuple):
    """The interfaces a running firewall's rules may name, and what to say of a name it lacks
    (the words after "interface 'dmz' "): a lab's come from its topology, an attachment's from
    its --iface mapping and its namespace's other devices, and the refusal says which."""

    names: tuple[str, ...]
    lacking: str

    @classmethod
    def of_topology(cls, names: Iterable[str]) -> KnownInterfaces:
        names = tuple(names)
        return cls(names, f"is not in the lab's topology (its firewall has "
                          f"{', '.join(sorted(names))})")

    @classmethod
    def of_attachment(cls, name: str, ns: str, mapping: dict[str, str],
                      others: Iterable[str]) -> KnownInterfaces:
        """An unmapped device keeps its own name (fw/lab/ifmap.py), so the rules may name it."""
        others = tuple(others)
        maps = ", ".join(f"{n}={d}" for n, d in mapping.items()) or "nothing"
        also = f"; namespace {ns} also has {', '.join(others)}" if others else ""
        return cls((*mapping, *others),
                   f"is not mapped by attachment {name!r} (it maps {maps}{also})")


def refuse_unknown_interfaces(ruleset: RuleSet, known: KnownInterfaces | None) -> None:
    """`fwlab up` and `reload` run a file in a real lab, where a rule naming an interface the
    firewall lacks silently never matches: one line naming the first such place, exit 2.
    `known` None (`--force`): no check."""
    missing = unknown_interfaces(ruleset, known.names) if known is not None else {}
    if known is None or not missing:
        return
    (name, span), *more = missing.items()
    also = f" (also {', '.join(repr(n) for n, _ in more)})" if more else ""
    raise LabError(f"interface '{name}' {known.lacking}{also}: rules naming it would never "
                   "match; --force runs the file anyway", span)


def warn_unknown_interfaces(ruleset: RuleSet, routing: Routing) -> None:
    """Once on stderr per name: a rule naming an interface the topology lacks never matches
    (`fwlab check` says where each one is)."""
    known = set(routing.interfaces)
    for name, span in unknown_interfaces(ruleset, known).items():
        where = f"{span}: " if span else ""
        stderr.print(f"fwlab: {where}warning: interface '{name}' is not in the topology "
                     f"(it has {', '.join(sorted(known))}): rules naming it never match",
                     highlight=False, markup=False, soft_wrap=True)
