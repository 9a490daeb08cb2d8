"""The documents and the parser cannot drift apart: every complete rule file in them parses."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from fw.dsl import load

ROOT = Path(__file__).resolve().parent.parent
DOCS = [
    ROOT.parent / "shared/docs/rules-language.md",
    ROOT / "docs/rules-language.md",
    ROOT / "docs/rules-extensions.md",
]


def rule_files_in(doc: Path) -> list[str]:
    blocks = re.findall(r"```\n(.*?)```", doc.read_text(), re.S)
    return [b for b in blocks if b.startswith(("mode", "#"))]


EXAMPLES = [
    pytest.param(doc, i, block, id=f"{doc.parent.parent.name}/{doc.name}#{i}")
    for doc in DOCS
    if doc.exists()
    for i, block in enumerate(rule_files_in(doc))
]


def test_the_contract_has_examples() -> None:
    assert len([e for e in EXAMPLES if "rules-language" in e.id]) >= 3


@pytest.mark.parametrize(("doc", "index", "block"), EXAMPLES)
def test_document_example_parses(doc: Path, index: int, block: str, tmp_path: Path) -> None:
    path = tmp_path / f"example{index}.fw"
    path.write_text(block)
    loaded = load(str(path))
    assert loaded.errors == [], "\n".join(d.render() for d in loaded.errors)
    assert loaded.ruleset is not None


def test_the_copy_of_the_contract_is_current() -> None:
    shared = ROOT.parent / "shared/docs/rules-language.md"
    if not shared.exists():
        pytest.skip("no shared/ beside the checkout")
    assert (ROOT / "docs/rules-language.md").read_text() == shared.read_text()


def test_examples_in_rules_match_the_contract() -> None:
    contract = (ROOT / "docs/rules-language.md").read_text()
    for name in ("stateful-web.fw", "stateless-web.fw"):
        assert (ROOT / "rules" / name).read_text() in contract
