"""The rules language: `load()` gives a checked RuleSet and every diagnostic found."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from fw.dsl.build import build
from fw.dsl.diagnostics import Collector, Diagnostic, Sources
from fw.dsl.shadow import shadow_warnings
from fw.errors import RulesError
from fw.model import RuleSet


@dataclass(frozen=True)
class Loaded:
    ruleset: RuleSet | None
    diagnostics: list[Diagnostic]
    sources: Sources | None = None  # the text of every file read, to quote lines of later checks

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]


@contextmanager
def gc_paused() -> Iterator[None]:
    """Loading allocates many small objects that all live as long as the rule set; the cyclic
    collector would walk them again and again for nothing (a third of the time at 10,000 rules)."""
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def load(path: str) -> Loaded:
    out = Collector()
    with gc_paused():
        ruleset = build(path, out)
        if ruleset is not None:
            shadow_warnings(ruleset, out)
    return Loaded(ruleset, out.items, out.sources)


def load_ruleset(path: str) -> RuleSet:
    """The rule set, or a RulesError carrying the first error (and all diagnostics)."""
    loaded = load(path)
    if loaded.ruleset is None:
        first = loaded.errors[0]
        raise RulesError(first.message, first.span, loaded.diagnostics)
    return loaded.ruleset
