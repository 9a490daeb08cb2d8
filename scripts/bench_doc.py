"""Where a benchmark script keeps its figures: its own section of docs/benchmarks.md, replaced
on every run (added at the end the first time), so a re-run never leaves two versions."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs/benchmarks.md"


def section_pattern(heading: str) -> re.Pattern:
    return re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)


def write_section(heading: str, section: str, after: str | None = None) -> None:
    """Replace the section that starts with the line `heading` (up to the next `## `); a new
    one goes right after the section `after` when there is one, else at the end."""
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    pattern, previous = section_pattern(heading), after and section_pattern(after)
    if pattern.search(text):
        text = pattern.sub(lambda m: section + "\n", text)
    elif previous and previous.search(text):
        text = previous.sub(lambda m: m.group(0) + section + "\n", text, count=1)
    else:
        text = text.rstrip("\n") + "\n\n" + section
    DOC.write_text(text.rstrip("\n") + "\n")
