"""Golden-file comparison: a mismatch writes `<name>.actual` beside the `.ref`-like file.

Set FWLAB_REGOLD=1 to (re)write the golden files from the current output; review the diff.
"""

from __future__ import annotations

import os
from pathlib import Path


def compare(golden: Path, actual: str) -> None:
    if os.environ.get("FWLAB_REGOLD") or not golden.exists():
        golden.write_text(actual)
        if not os.environ.get("FWLAB_REGOLD"):
            raise AssertionError(f"{golden} did not exist: written now, review and commit it")
        return
    expected = golden.read_text()
    spill = golden.with_name(golden.name + ".actual")
    if actual != expected:
        spill.write_text(actual)
        raise AssertionError(f"{golden} differs: see {spill} (diff -u {golden} {spill})")
    spill.unlink(missing_ok=True)
