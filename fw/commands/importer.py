"""`fwlab import`: an nftables rule set (text or `nft -j` JSON) as a fwlab rule file."""

from __future__ import annotations

import sys
from pathlib import Path

from fw.commands.export import write_text
from fw.commands.output import stderr
from fw.errors import FwlabError
from fw.export.nft_import import import_nft


def run_import(source: str, *, out: str | None, skip_unsupported: bool) -> int:
    """Unsupported constructs raise FwlabError (one line, exit 2) unless skipped; each rule
    skipped is named on stderr and in a comment of the output."""
    origin = "<stdin>" if source == "-" else source
    result = import_nft(read_source(source), origin, skip_unsupported=skip_unsupported)
    for what in result.skipped:
        stderr.print(f"fwlab: skipped {what}", markup=False, highlight=False)
    write_text(out, result.text)
    return 0


def read_source(source: str) -> str:
    if source == "-":
        return sys.stdin.read()
    try:
        return Path(source).read_text()
    except (OSError, UnicodeDecodeError) as exc:
        why = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise FwlabError(f"{source}: error: cannot read the file: {(why or '').lower()}"
                         ) from None
