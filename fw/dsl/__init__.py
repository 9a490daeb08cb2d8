"""The rules language: `load()` gives a checked RuleSet and every diagnostic found."""

from __future__ import annotations

from dataclasses import dataclass

from fw.dsl.build import build
from fw.dsl.diagnostics import Collector, Diagnostic
from fw.dsl.shadow import shadow_warnings
from fw.errors import RulesError
from fw.model import RuleSet


@dataclass(frozen=True)
class Loaded:
    ruleset: RuleSet | None
    diagnostics: list[Diagnostic]

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]


def load(path: str) -> Loaded:
    out = Collector()
    ruleset = build(path, out)
    if ruleset is not None:
        shadow_warnings(ruleset, out)
    return Loaded(ruleset, out.items)


def load_ruleset(path: str) -> RuleSet:
    """The rule set, or a RulesError carrying the first error (and all diagnostics)."""
    loaded = load(path)
    if loaded.ruleset is None:
        first = loaded.errors[0]
        raise RulesError(first.message, first.span, loaded.diagnostics)
    return loaded.ruleset
