"""Every invalid file in tests/golden/bad gives exactly the diagnostics `fwlab check` gives it
(the language's, the exact unreachable-rule analysis, interfaces the default lab lacks), as in
its .err file;
every example in rules/ loads without error and its model dump matches tests/golden/models."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fw.commands.check import file_diagnostics
from fw.dsl import load
from fw.lab.topology import default_topology
from tests.golden import compare

ROOT = Path(__file__).resolve().parent.parent
BAD = sorted((ROOT / "tests/golden/bad").glob("*.fw"))
RULES = sorted((ROOT / "rules").glob("*.fw"))


@pytest.mark.parametrize("path", BAD, ids=lambda p: p.stem)
def test_bad_file_diagnostics(path: Path, in_repo: Path) -> None:
    relative = str(path.relative_to(ROOT))
    diagnostics = file_diagnostics(relative, default_topology(), exact=True)
    rendered = "\n".join(d.render() for d in diagnostics) + "\n"
    compare(path.with_suffix(".err"), rendered)


@pytest.mark.parametrize("path", RULES, ids=lambda p: p.stem)
def test_example_rules_load_cleanly(path: Path, in_repo: Path) -> None:
    loaded = load(str(path.relative_to(ROOT)))
    assert loaded.errors == []
    assert loaded.ruleset is not None
    dump = json.dumps(loaded.ruleset.model_dump(mode="json"), indent=1) + "\n"
    compare(ROOT / "tests/golden/models" / f"{path.stem}.json", dump)


def test_model_dump_is_stable(in_repo: Path) -> None:
    first = load("rules/stateful-web.fw").ruleset
    second = load("rules/stateful-web.fw").ruleset
    assert first.model_dump() == second.model_dump()
    assert type(first).model_validate(first.model_dump()).model_dump() == first.model_dump()
