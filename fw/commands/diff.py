"""`fwlab diff A.fw B.fw`: the packets two rule sets treat differently (fw/analysis/diff.py).

Exit status as diff(1): 0 when the two are equivalent, 1 when they differ, 2 on error."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from fw.analysis.diff import Diff, diff
from fw.analysis.diff_text import diff_json, match_text
from fw.commands.common import routing_from
from fw.commands.output import print_json, stdout
from fw.dsl import load_ruleset

VERDICT_STYLE = {"accept": "green", "drop": "red", "reject": "magenta"}


def run_diff(path_a: str, path_b: str, *, topology: str | None = None,
             as_json: bool = False) -> int:
    result = diff(load_ruleset(path_a), load_ruleset(path_b), routing_from(topology))
    if as_json:
        print_json(diff_json(result, path_a, path_b))
    else:
        show(result, path_a, path_b)
    return 0 if result.equivalent else 1


def show(result: Diff, path_a: str, path_b: str) -> None:
    if result.equivalent:
        stdout.print(Text(f"{path_a} and {path_b} treat every packet alike", style="green"))
        return
    names = {v: k for k, v in result.ifaces.items()}
    table = Table(title=f"Packets {path_a} (a) and {path_b} (b) treat differently",
                  show_lines=True)
    for column in ("chain", "ct state", "packets", "a", "b", "example"):
        table.add_column(column, overflow="fold")
    for d in result.differences:
        example = d.example if not d.after else "\n".join(
            [*(f"after {p}" for p in d.after), d.example])
        table.add_row(d.chain, d.ct_state or "-", match_text(d.box, names),
                      outcome_text(d.a), outcome_text(d.b), example)
    stdout.print(table)
    summary = diff_json(result, path_a, path_b)["summary"]
    stdout.print(f"{summary['regions']} regions; destination ports affected: "
                 f"TCP {summary['tcp_ports']:,}, UDP {summary['udp_ports']:,}")


def outcome_text(outcome) -> Text:
    return Text.assemble((outcome.verdict, VERDICT_STYLE.get(outcome.verdict, "yellow")),
                         f"\n{outcome.ref()}")
