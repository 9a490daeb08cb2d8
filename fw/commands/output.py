"""Where command output goes: rich consoles for people, plain JSON for scripts."""

from __future__ import annotations

import json
import sys

from rich.console import Console

# Piped output is read by people in logs and by grep: wide enough that rows do not wrap.
stdout = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def print_json(data: object) -> None:
    """One JSON document on stdout; never coloured, whatever the terminal."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def print_json_line(data: object) -> None:
    sys.stdout.write(json.dumps(data, separators=(",", ":"), default=str) + "\n")


def rows_table(rows: list[dict], columns: list[str] | None = None):
    """A plain table of JSON-like rows (conntrack entries, NAT mappings): one column per key."""
    from rich.table import Table

    columns = columns or list(dict.fromkeys(k for row in rows for k in row))
    table = Table(show_edge=False, pad_edge=False)
    for col in columns:
        table.add_column(col)
    for row in rows:
        table.add_row(*[cell(row.get(c)) for c in columns])
    return table


def cell(value: object) -> str:
    if isinstance(value, list | tuple):
        return "/".join(str(v) for v in value)
    return "" if value is None else str(value)
