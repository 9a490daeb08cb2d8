"""`fwlab export`: the rule file as an nftables script that `nft -f` loads."""

from __future__ import annotations

import sys
from pathlib import Path

from fw.commands.output import stderr
from fw.dsl import load_ruleset
from fw.errors import FwlabError
from fw.export.nft import to_nft


def run_export(rules: str, *, out: str | None, approximate: bool) -> int:
    """Refusals and bad rule files raise FwlabError (one line, exit 2 in fw/cli.py)."""
    result = to_nft(load_ruleset(rules), approximate=approximate)
    for warning in result.warnings:
        stderr.print(warning.render(), markup=False, highlight=False)
    write_text(out, result.text)
    return 0


def write_text(out: str | None, text: str) -> None:
    """To the file named, or standard output for none or `-`."""
    if out is None or out == "-":
        sys.stdout.write(text)
        return
    try:
        Path(out).write_text(text)
    except OSError as exc:
        raise FwlabError(f"cannot write {out}: {(exc.strerror or str(exc)).lower()}") from None
