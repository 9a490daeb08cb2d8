"""Where a benchmark script keeps its figures: its own section of docs/benchmarks.md, replaced
on every run (added at the end the first time), so a re-run never leaves two versions."""

from __future__ import annotations

import re
from pathlib import Path

DOC = Path(__file__).resolve().parent.parent / "docs/benchmarks.md"


def write_section(heading: str, section: str) -> None:
    """Replace the section that starts with the line `heading` (up to the next `## `)."""
    text = DOC.read_text()
    pattern = re.compile(rf"^{re.escape(heading)}\n.*?(?=^## |\Z)", re.S | re.M)
    text = (pattern.sub(lambda m: section + "\n", text) if pattern.search(text)
            else text.rstrip("\n") + "\n\n" + section)
    DOC.write_text(text.rstrip("\n") + "\n")
