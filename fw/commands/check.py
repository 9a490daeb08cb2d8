"""`fwlab check`: every problem in the rule files, where it is, in the compiler form."""

from __future__ import annotations

from rich.text import Text

from fw.commands.neighbours import neighbour_warnings
from fw.commands.output import print_json, stdout
from fw.dsl import load
from fw.dsl.diagnostics import Diagnostic, Sources
from fw.dsl.pools import outside_segments
from fw.lab.topology import Topology, default_topology_path, load_topology
from fw.model import IfaceMatch, RuleSet

COLOURS = {"error": "bold red", "warning": "bold yellow"}


def run_check(files: list[str], *, strict: bool, as_json: bool,
              topology: str | None = None, exact: bool = False) -> int:
    lab = load_topology(topology or default_topology_path())
    networks = segment_networks(lab) if topology else None
    diagnostics: list[Diagnostic] = []
    for path in files:
        diagnostics.extend(file_diagnostics(path, lab, networks, exact=exact))
    if as_json:
        print_json({"files": files, "diagnostics": [d.as_json() for d in diagnostics]})
    else:
        show(files, diagnostics)
    return exit_status(diagnostics, strict)


def segment_networks(topology: Topology) -> list:
    """Every network an interface of the topology sits on (its segments' prefixes)."""
    nodes = topology.nodes().values()
    return [a.network for node in nodes for i in node.interfaces.values() for a in i.addresses]


def file_diagnostics(path: str, topology: Topology | None = None,
                     networks: list | None = None, *, exact: bool = False) -> list[Diagnostic]:
    """What `check` says about one rule file: the language's errors and warnings, then (with
    `exact`) the exact unreachable-rule analysis, the interfaces `topology` does not have, and
    pool members outside the `networks` of an explicitly given topology."""
    loaded = load(path)
    if loaded.ruleset is None:
        return loaded.diagnostics
    sources = loaded.sources or Sources()
    extra = exact_warnings(loaded.ruleset, loaded.diagnostics, sources) if exact else []
    interfaces = list(topology.firewall.interfaces) if topology is not None else ["lan", "wan"]
    extra += neighbour_warnings(loaded.ruleset, interfaces, sources)
    if topology is not None:
        extra += interface_warnings(loaded.ruleset, topology, sources)
    if networks is not None:
        extra += outside_segments(loaded.ruleset, networks)
    return [*loaded.diagnostics, *extra]


def exact_warnings(ruleset, known: list[Diagnostic], sources: Sources) -> list[Diagnostic]:
    """Rules no packet reaches (fw/analysis/unreachable.py) that the shadow check, which looks
    for one covering rule, did not already name, with the rules that cover them."""
    from fw.analysis.unreachable import find

    named = {(d.span.file, d.span.line) for d in known if d.span}
    return [Diagnostic("warning", f"rule never matches: {covered_by(u.rule, u.covering)} "
                       "(exact check)", u.rule.span, sources.line(u.rule.span))
            for u in find(ruleset, named=lambda r: bool(r.span) and (r.span.file, r.span.line)
                          not in named) if u.rule.span and (u.rule.span.file, u.rule.span.line)
            not in named]


def covered_by(rule, covering) -> str:
    """'rules at lines 12 and 14 take every packet it would' (file:line for another file)."""
    if not covering:
        return "no packet passes all its tests"
    where = [str(r.span.line) if r.span and rule.span and r.span.file == rule.span.file
             else (f"{r.span.file}:{r.span.line}" if r.span else f"rule {r.index + 1}")
             for r in covering]
    if len(where) == 1:
        return f"the rule at line {where[0]} takes every packet it would"
    return (f"rules at lines {', '.join(where[:-1])} and {where[-1]} take every packet it "
            "would")


def interface_warnings(ruleset: RuleSet, topology: Topology,
                       sources: Sources) -> list[Diagnostic]:
    """`iif dmz` where the lab has no dmz: every rule naming it silently never matches."""
    known = list(topology.firewall.interfaces)
    out = []
    for rule in [*ruleset.rules(), *ruleset.nat]:
        for match in rule.matches:
            if not isinstance(match, IfaceMatch):
                continue
            for name in (n for n in match.names if n not in known):
                text = (f"interface '{name}' is not in the topology {topology_name(topology)} "
                        f"(its firewall has {', '.join(known)}): a packet never comes in or "
                        "goes out there")
                out.append(Diagnostic("warning", text, match.span, sources.line(match.span)))
    return out


def topology_name(topology: Topology) -> str:
    if topology.source is None or topology.source == default_topology_path():
        return "of the default lab"
    return str(topology.source)


def exit_status(diagnostics: list[Diagnostic], strict: bool) -> int:
    if any(d.severity == "error" for d in diagnostics):
        return 2
    return 1 if strict and diagnostics else 0


def show(files: list[str], diagnostics: list[Diagnostic]) -> None:
    for d in diagnostics:
        stdout.print(styled(d))
    errors = sum(d.severity == "error" for d in diagnostics)
    warnings = len(diagnostics) - errors
    summary = f"{len(files)} file(s) checked: {errors} error(s), {warnings} warning(s)"
    stdout.print(Text(summary, style="bold red" if errors else "green"))


def styled(d: Diagnostic) -> Text:
    text = Text()
    if d.span:
        text.append(f"{d.span}: ", style="bold")
    text.append(f"{d.severity}:", style=COLOURS[d.severity])
    text.append(f" {d.message}")
    caret = d.caret()
    if caret:
        source, marks = caret.split("\n")
        text.append(f"\n{source}\n")
        text.append(marks, style="bold green")
    return text
