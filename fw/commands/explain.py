"""`fwlab explain`: one packet through a rule set, and why it got its verdict."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from fw.commands.common import engine_for
from fw.commands.output import print_json, stdout
from fw.engine.decision import Decision
from fw.engine.engine import HOOKS, Engine
from fw.errors import FwlabError
from fw.packetspec import parse_packet
from fw.views import decision_view

VERDICT_STYLE = {"accept": "bold green", "drop": "bold red", "reject": "bold magenta"}
STEP = 0.001  # seconds between the packets of a flow given with --after


def run_explain(rules: str, packet: str, *, after: list[str], hook: str, iif: str | None,
                oif: str | None, topology: str | None, as_json: bool) -> int:
    if hook not in HOOKS:
        raise FwlabError(f"--hook {hook!r}: hooks are {', '.join(HOOKS)}")
    engine = engine_for(rules, topology)
    earlier = [judge(engine, text, hook, None, None, i * STEP, False) for i, text in
               enumerate(after)]
    decision = judge(engine, packet, hook, iif, oif, len(after) * STEP, True)
    view = decision_json(engine, packet, decision)
    before = [decision_json(engine, text, d) for text, d in zip(after, earlier, strict=True)]
    if as_json:
        print_json({**view, "after": before})
    else:
        show_earlier(before)
        show(view)
    return 0


def judge(engine: Engine, text: str, hook: str, iif, oif, now: float, trace: bool) -> Decision:
    return engine.process(parse_packet(text), hook=hook, iif=iif, oif=oif, now=now, trace=trace)


def decision_json(engine: Engine, text: str, d: Decision) -> dict:
    return {"packet": text, **decision_view(engine, d)}


def verdict_text(verdict: str) -> Text:
    return Text(verdict.upper(), style=VERDICT_STYLE[verdict])


def show_earlier(earlier: list[dict]) -> None:
    for e in earlier:
        stdout.print(Text.assemble("after ", (e["packet"], "dim"), ": ", verdict_text(e["verdict"]),
                                   f" ({e['ct_state'] or 'stateless'})"))


def show(view: dict, heading: str = "packet   ") -> None:
    """One decision as people read it; `fwlab trace` prints each traced packet this way too."""
    stdout.print(Text.assemble((heading, "bold"), view["packet"]))
    if view["leaves"] is not None:
        stdout.print(Text.assemble(("leaves   ", "bold"), view["leaves"]))
    where = f"iif {view['iif'] or '-'}, oif {view['oif'] or '-'}"
    stdout.print(Text.assemble(("verdict  ", "bold"), verdict_text(view["verdict"]),
                               f" in chain {view['chain']} ", (f"({where})", "dim")))
    stdout.print(Text.assemble(("by       ", "bold"), view["by"]))
    stdout.print(Text.assemble(("ct state ", "bold"),
                               view["ct_state"] or "- (stateless rule set)"))
    stdout.print(Text.assemble(("why      ", "bold"), view["reason"]))
    for nat in view["nat_text"]:
        stdout.print(Text.assemble(("nat      ", "bold"), nat))
    if view["trace"]:
        stdout.print(trace_table(view))


def trace_table(view: dict) -> Table:
    table = Table(title="rules tried, in order", title_justify="left", box=None, pad_edge=False)
    for column in ("line", "rule", "result"):
        table.add_column(column)
    for step in view["trace"]:
        if step["matched"]:
            outcome = Text(f"matches -> {step['verdict'] or 'continue'}", style="green")
        else:
            outcome = Text(f"no: {step['failed']}", style="dim")
        table.add_row(str(step["line"] or ""), step["text"], outcome)
    if view["rule"] is None:
        table.add_row("", f"policy {view['chain']}",
                      Text(view["verdict"], style=VERDICT_STYLE[view["verdict"]]))
    return table
