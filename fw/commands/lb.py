"""`fwlab lb`: the lab's load-balancing pools, live: each member with its connections (open now
and in all) and the clients kept sticky to it.

The daemon answers the control request {"cmd": "lb"} with views.pool_rows / sticky_rows.
"""

from __future__ import annotations

from rich.text import Text

from fw.commands.options import JsonOpt, NameOpt, need_root
from fw.commands.output import print_json, rows_table, stdout
from fw.errors import LabError

MEMBER_COLUMNS = ["member", "address", "port", "weight", "active", "total", "sticky"]
STICKY_COLUMNS = ["client", "member", "connections", "expires_in"]


def lb(name: NameOpt = "default", as_json: JsonOpt = False) -> None:
    """Load-balancing pools, live: members, connections per member (active/total), stickiness."""
    need_root("lb")
    from fw.lab import control

    answer = control.request(name, {"cmd": "lb"})
    if not answer.get("ok"):
        raise LabError(f"lab {name!r}: {answer.get('error', 'the daemon refused')}")
    if as_json:
        print_json({"members": answer["members"], "sticky": answer["sticky"]})
    else:
        show(answer["members"], answer["sticky"])


def show(members: list[dict], sticky: list[dict]) -> None:
    if not members:
        stdout.print("no pools: the rules have no 'dnat to { ... }'")
        return
    for ref, rows in by_rule(members).items():
        stdout.print(Text(f"{ref}  ({rows[0]['method']})", style="bold"))
        stdout.print(rows_table(rows, MEMBER_COLUMNS))
        mine = [s for s in sticky if rule_text(s["rule"]) == ref]
        if mine:
            stdout.print(rows_table(mine, STICKY_COLUMNS))
    total = sum(r["total"] for r in members)
    stdout.print(f"{total} connection(s) balanced; active = still in the connection table")


def by_rule(rows: list[dict]) -> dict[str, list[dict]]:
    grouped: dict[str, list[dict]] = {}
    for row in rows:
        grouped.setdefault(rule_text(row["rule"]), []).append(row)
    return grouped


def rule_text(ref: dict) -> str:
    return f"{ref['file']}:{ref['line']}: {ref['text']}"
