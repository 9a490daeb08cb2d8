"""Every document the project cites lives in the repository: a fresh clone has all of them.

A reference is any markdown file name in the README, the docs, the code, the scripts or the
tests; it resolves as a path from the repository's root, or as a file in docs/ (the way code
and docs cite each other: "docs/design.md", "engine.md")."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = re.compile(r"[A-Za-z0-9_./-]+\.md\b")
OUTSIDE = {"shared/docs/rules-language.md"}  # the contract's original, compared when present


def citing_files() -> list[Path]:
    files = [ROOT / "README.md", ROOT / "Makefile", *(ROOT / "docs").glob("*.md")]
    for folder in ("fw", "scripts", "tests"):
        files += [p for p in (ROOT / folder).rglob("*") if p.is_file() and p.suffix in
                  {".py", ".sh", "", ".md"} and "golden" not in p.parts]
    return files


def resolves(reference: str) -> bool:
    return (ROOT / reference).is_file() or (ROOT / "docs" / Path(reference).name).is_file()


def test_every_cited_document_is_in_the_repository() -> None:
    missing = []
    for path in citing_files():
        for reference in set(REFERENCE.findall(path.read_text(errors="replace"))):
            if reference not in OUTSIDE and not resolves(reference):
                missing.append(f"{path.relative_to(ROOT)}: {reference}")
    assert not missing, "\n".join(sorted(missing))
