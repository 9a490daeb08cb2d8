"""`fwlab fmt FILE [--check]`: the rule file in one style (fw/dsl/fmt.py), or whether it is."""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from fw.commands.output import stderr
from fw.dsl import load
from fw.dsl.fmt import format_text
from fw.errors import FwlabError
from fw.userfiles import read_text


def run_fmt(path: str, *, check: bool) -> int:
    text = read_text(path)
    formatted = format_text(text)
    same_meaning(path, text, formatted)
    if check:
        if formatted != text:
            stderr.print(f"{path}: not formatted (fwlab fmt {path} prints it formatted)")
            return 1
        return 0
    sys.stdout.write(formatted)
    return 0


def same_meaning(path: str, text: str, formatted: str) -> None:
    """The formatted file must load to the rule set the original loads to (set order aside);
    a formatter bug must never change what a firewall does."""
    if meaning(path, text) != meaning(path, formatted):
        raise FwlabError(f"{path}: fwlab fmt would change the file's meaning (a bug in fmt): "
                         "left as it is")


def meaning(path: str, text: str) -> str | None:
    """The loaded rule set, lists sorted, as JSON (None when it has errors); loaded from the
    file's own directory so its includes resolve."""
    where = Path(path).resolve().parent
    with tempfile.NamedTemporaryFile("w", suffix=".fw", dir=where, delete=True) as tmp:
        tmp.write(text)
        tmp.flush()
        loaded = load(tmp.name)
    if loaded.ruleset is None:
        return None
    return json.dumps(unordered(loaded.ruleset.model_dump(mode="json")), sort_keys=True)


def unordered(value: object) -> object:
    if isinstance(value, dict):
        return {k: unordered(v) for k, v in value.items()}
    if isinstance(value, list):
        return sorted((unordered(v) for v in value), key=lambda v: json.dumps(v, sort_keys=True))
    return value
