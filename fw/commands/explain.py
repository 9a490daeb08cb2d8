"""`fwlab explain`: one packet through a rule set, and why it got its verdict."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text

from fw.commands.common import engine_for
from fw.commands.output import print_json, stdout
from fw.core.text import rule_ref
from fw.dsl.format import match_text
from fw.engine.decision import Decision, TraceStep
from fw.engine.engine import HOOKS, Engine
from fw.engine.packet import decode
from fw.errors import FwlabError
from fw.packetspec import parse_packet
from fw.views import nat_change_json, nat_change_text, summary

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
    if as_json:
        print_json({**decision_json(packet, decision), "after": [
            decision_json(text, d) for text, d in zip(after, earlier, strict=True)]})
    else:
        show(engine, packet, decision, list(zip(after, earlier, strict=True)))
    return 0


def judge(engine: Engine, text: str, hook: str, iif, oif, now: float, trace: bool) -> Decision:
    return engine.process(parse_packet(text), hook=hook, iif=iif, oif=oif, now=now, trace=trace)


def decision_json(text: str, d: Decision) -> dict:
    return {
        "packet": text, "verdict": d.verdict, "chain": d.chain, "rule": rule_ref(d.rule),
        "ct_state": d.ct_state, "reason": d.reason, "iif": d.iif, "oif": d.oif,
        "nat": [nat_change_json(nat) for nat in d.nat],
        "trace": [{"line": s.rule.span.line if s.rule.span else None, "text": s.rule.text,
                   "matched": s.matched, "failed": failed_text(s)} for s in d.trace],
    }


def verdict_text(d: Decision) -> Text:
    return Text(d.verdict.upper(), style=VERDICT_STYLE[d.verdict])


def show(engine: Engine, packet: str, d: Decision, earlier: list[tuple[str, Decision]]) -> None:
    for text, e in earlier:
        stdout.print(Text.assemble("after ", (text, "dim"), ": ", verdict_text(e),
                                   f" ({e.ct_state or 'stateless'})"))
    stdout.print(Text.assemble(("packet   ", "bold"), packet))
    if d.packet is not None:
        stdout.print(Text.assemble(("leaves   ", "bold"), summary(decode(d.packet))))
    where = f"iif {d.iif or '-'}, oif {d.oif or '-'}"
    stdout.print(Text.assemble(("verdict  ", "bold"), verdict_text(d), f" in chain {d.chain} ",
                               (f"({where})", "dim")))
    stdout.print(Text.assemble(("by       ", "bold"), decider_text(engine, d)))
    stdout.print(Text.assemble(("ct state ", "bold"), d.ct_state or "- (stateless rule set)"))
    stdout.print(Text.assemble(("why      ", "bold"), d.reason))
    for nat in d.nat:
        stdout.print(Text.assemble(("nat      ", "bold"), nat_change_text(nat)))
    if d.trace:
        stdout.print(trace_table(d))


def decider_text(engine: Engine, d: Decision) -> str:
    if d.rule is None:
        return f"policy {d.chain} {engine.compiled.policy(d.chain)}"
    span = d.rule.span
    return f"{span}: {d.rule.text}" if span else d.rule.text


def trace_table(d: Decision) -> Table:
    table = Table(title="rules tried, in order", title_justify="left", box=None, pad_edge=False)
    for column in ("line", "rule", "result"):
        table.add_column(column)
    for step in d.trace:
        line = str(step.rule.span.line) if step.rule.span else ""
        if step.matched:
            outcome = Text(f"matches -> {step.rule.verdict or 'continue'}", style="green")
        else:
            outcome = Text(f"no: {failed_text(step)}", style="dim")
        table.add_row(line, step.rule.text, outcome)
    if d.rule is None:
        table.add_row("", f"policy {d.chain}", Text(d.verdict, style=VERDICT_STYLE[d.verdict]))
    return table


def failed_text(step: TraceStep) -> str | None:
    return match_text(step.failed) if step.failed is not None else None
