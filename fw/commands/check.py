"""`fwlab check`: every problem in the rule files, where it is, in the compiler form."""

from __future__ import annotations

from rich.text import Text

from fw.commands.output import print_json, stdout
from fw.dsl import load
from fw.dsl.diagnostics import Diagnostic
from fw.dsl.pools import outside_segments

COLOURS = {"error": "bold red", "warning": "bold yellow"}


def run_check(files: list[str], *, strict: bool, as_json: bool,
              topology: str | None = None, exact: bool = False) -> int:
    networks = segment_networks(topology) if topology else None
    diagnostics: list[Diagnostic] = []
    for path in files:
        loaded = load(path)
        diagnostics.extend(loaded.diagnostics)
        if networks is not None and loaded.ruleset is not None:
            diagnostics.extend(outside_segments(loaded.ruleset, networks))
        if exact and loaded.ruleset is not None:
            diagnostics.extend(exact_warnings(loaded.ruleset, loaded.diagnostics))
    if as_json:
        print_json({"files": files, "diagnostics": [d.as_json() for d in diagnostics]})
    else:
        show(files, diagnostics)
    return exit_status(diagnostics, strict)


def segment_networks(topology: str) -> list:
    """Every network an interface of the topology sits on (its segments' prefixes)."""
    from fw.lab.topology import load_topology

    nodes = load_topology(topology).nodes().values()
    return [a.network for node in nodes for i in node.interfaces.values() for a in i.addresses]


def exact_warnings(ruleset, known: list[Diagnostic]) -> list[Diagnostic]:
    """Rules no packet reaches (fw/analysis/unreachable.py) that the shadow check, which looks
    for one covering rule, did not already name."""
    from fw.analysis.unreachable import unreachable

    named = {(d.span.file, d.span.line) for d in known if d.span}
    return [Diagnostic("warning", "rule can never match: the rules before it take all its "
                       "packets between them (exact check)", r.span)
            for r in unreachable(ruleset) if r.span and (r.span.file, r.span.line) not in named]


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
