"""`fwlab replay`: a capture through the engine, the capture's own timestamps as `now`."""

from __future__ import annotations

import sys
from collections import Counter
from dataclasses import dataclass, field

from rich.progress import Progress, SpinnerColumn, TextColumn
from rich.table import Table
from rich.text import Text

from fw.commands.common import engine_for
from fw.commands.explain import VERDICT_STYLE
from fw.commands.output import print_json_line, rows_table, stdout
from fw.core.text import rule_ref
from fw.engine.decision import Decision
from fw.engine.engine import Engine
from fw.engine.packet import decode
from fw.errors import CaptureError
from fw.pcap import Frame, RawWriter, read_frames
from fw.views import engine_status, nat_change_json, nat_rows, pool_rows, summary


@dataclass
class Replay:
    engine: Engine
    writer: RawWriter | None
    as_json: bool
    rows_wanted: int
    table: Table = field(default_factory=lambda: packet_table())
    totals: Counter = field(default_factory=Counter)
    first_time: float | None = None
    last_time: float = 0.0
    next_expiry: float | None = None

    def feed(self, frame: Frame) -> None:
        now = self.last_time = frame.time
        self.first_time = now if self.first_time is None else self.first_time
        self.expire_due(now)
        decision = self.engine.process(frame.data, now=now)
        self.totals[decision.verdict] += 1
        if self.writer is not None and decision.accepted:
            self.writer.write(decision.packet or frame.data, now)
        if self.as_json:
            print_json_line(row_json(frame, decision))
        elif self.rows_wanted == 0 or frame.index < self.rows_wanted:
            self.table.add_row(*row_cells(frame, decision, now - self.first_time))

    def expire_due(self, now: float) -> None:
        if self.next_expiry is not None and now < self.next_expiry:
            return
        self.engine.expire(now)
        self.next_expiry = self.engine.next_expiry()


def run_replay(rules: str, capture: str, *, out: str | None, topology: str | None,
               as_json: bool, rows: int, nat: bool = False) -> int:
    engine = engine_for(rules, topology)
    writer = RawWriter(out) if out else None
    replay = Replay(engine, writer, as_json, rows)
    damage: CaptureError | None = None
    complete = False
    try:
        with progress(enabled=not as_json and sys.stdout.isatty()) as bar:
            for frame in read_frames(capture):
                replay.feed(frame)
                bar(frame.index)
        complete = True
    except CaptureError as exc:
        damage = exc
    finally:
        if writer is not None:
            writer.close(keep=complete)  # --out appears only for a capture read to its end
    if not as_json and (replay.totals or damage is None):
        show_summary(replay, rows)
    if nat:
        show_mappings(engine, replay.last_time, as_json)
    if engine.nat.pools:
        show_pools(engine, replay.last_time, as_json)
    if damage is not None:
        raise damage
    return 0


class progress:
    """A live packet counter on a terminal; nothing otherwise."""

    def __init__(self, enabled: bool) -> None:
        self.bar = Progress(SpinnerColumn(), TextColumn("{task.completed:,} packets judged"),
                            transient=True, console=stdout) if enabled else None

    def __enter__(self):
        if self.bar is None:
            return lambda index: None
        self.bar.start()
        task = self.bar.add_task("replay", total=None)
        return lambda index: index % 2048 == 0 and self.bar.update(task, completed=index)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


def packet_table() -> Table:
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column, justify in (("#", "right"), ("time", "right"), ("packet", "left"),
                            ("verdict", "left"), ("ct", "left"), ("rule", "left")):
        table.add_column(column, justify=justify)
    return table


def rule_cell(d: Decision) -> str:
    if d.rule is None:
        return f"policy {d.chain}" if d.reason.startswith("no rule") else d.reason[:40]
    span = d.rule.span
    return f"{span.file}:{span.line}" if span else d.rule.text


def describe(frame: Frame) -> str:
    """The packet in one line; a frame that carries no IP packet says what it carries."""
    return f"not IP ({frame.not_ip})" if frame.not_ip else summary(decode(frame.data))


def row_cells(frame: Frame, d: Decision, elapsed: float) -> list:
    text = describe(frame)
    if d.packet is not None:
        text += f"\n  => {summary(decode(d.packet))}"
    return [str(frame.index), f"{elapsed:.6f}", text,
            Text(d.verdict, style=VERDICT_STYLE[d.verdict]), d.ct_state or "-", rule_cell(d)]


def row_json(frame: Frame, d: Decision) -> dict:
    return {
        "index": frame.index, "time": frame.time, "packet": describe(frame),
        "verdict": d.verdict, "chain": d.chain, "rule": rule_ref(d.rule),
        "ct_state": d.ct_state, "reason": d.reason,
        "nat": [nat_change_json(n) for n in d.nat] or None,
    }


def show_summary(replay: Replay, rows: int) -> None:
    stdout.print(replay.table)
    shown = replay.table.row_count
    total = sum(replay.totals.values())
    if shown < total:
        stdout.print(f"({total - shown:,} more packets not shown: --rows 0 shows all, "
                     "--json gives one line per packet)", style="dim")
    parts = [f"{replay.totals[v]:,} {v}" for v in ("accept", "drop", "reject")]
    stdout.print(Text(f"{total:,} packets: " + ", ".join(parts), style="bold"))
    stdout.print(hits_table(replay.engine))


def show_mappings(engine: Engine, now: float, as_json: bool) -> None:
    """The NAT mapping table as the capture left it (ages and timeouts at its last packet)."""
    rows = nat_rows(engine.nat, now)
    if as_json:
        print_json_line({"nat_mappings": rows})
    elif rows:
        stdout.print(Text("NAT mappings at the end of the capture", style="bold"))
        stdout.print(rows_table(rows))
    else:
        stdout.print("no NAT mappings")


def show_pools(engine: Engine, now: float, as_json: bool) -> None:
    """Connections per pool member (`dnat to POOL`): given in all, still open at the end."""
    rows = pool_rows(engine.nat, now)
    if as_json:
        print_json_line({"pools": rows})
        return
    stdout.print(Text("connections per pool member", style="bold"))
    stdout.print(rows_table([{"rule": f"{r['rule']['file']}:{r['rule']['line']}",
                              **{k: v for k, v in r.items() if k != "rule"}} for r in rows]))


def hits_table(engine: Engine) -> Table:
    table = Table(title="hits per rule", title_justify="left", box=None, pad_edge=False)
    for column in ("chain", "line", "rule", "packets", "bytes"):
        table.add_column(column, justify="right" if column in ("packets", "bytes") else "left")
    for chain, data in engine_status(engine)["chains"].items():
        for rule in data["rules"]:
            if rule["hits"]:
                table.add_row(chain, str(rule["line"]), rule["text"], f"{rule['hits']:,}",
                              f"{rule['bytes']:,}")
        if data["policy_hits"]:
            table.add_row(chain, "", f"policy {data['policy']}", f"{data['policy_hits']:,}",
                          f"{data['policy_bytes']:,}")
    return table
