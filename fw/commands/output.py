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


def json_line(data: object) -> str:
    """One compact JSON line, newline included (what print_json_line prints)."""
    return json.dumps(data, separators=(",", ":"), default=str) + "\n"


def print_json_line(data: object) -> None:
    sys.stdout.write(json_line(data))


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


def rules_table(chains: dict[str, dict]):
    """Hits and bytes per rule and per policy, chain by chain: `status` of either engine (the
    engine's counters from fw/views.py, or nft's mapped back to the rule file)."""
    from rich.table import Table

    table = Table(show_edge=False, pad_edge=False)
    for col, just in (("chain", "left"), ("line", "right"), ("rule", "left"),
                      ("hits", "right"), ("bytes", "right")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for chain, c in chains.items():
        for r in c.get("rules", []):
            table.add_row(chain, str(r.get("line") or ""), r.get("text") or "",
                          str(r["hits"]), str(r["bytes"]))
        if c.get("mismatch"):
            table.add_row(chain, "", f"[red]{c['mismatch']}[/]", "", "")
        table.add_row(chain, "", f"[italic]policy {c['policy']}[/]",
                      str(c["policy_hits"]), str(c["policy_bytes"]))
    return table
