"""`fwlab replay`: a capture through the engine, the capture's own timestamps as `now`."""

from __future__ import annotations

import math
import sys
from collections import Counter
from dataclasses import dataclass, field

from rich.progress import Progress, SpinnerColumn, TextColumn
from rich.table import Table
from rich.text import Text

from fw.commands import replay_workers
from fw.commands.common import engine_for
from fw.commands.explain import VERDICT_STYLE
from fw.commands.output import json_line, print_json_line, rows_table, stderr, stdout
from fw.core.text import rule_ref
from fw.engine.decision import Decision
from fw.engine.engine import Engine
from fw.engine.packet import decode
from fw.engine.shard import CLASSES, Sharder, one_engine_only
from fw.errors import CaptureError
from fw.pcap import Frame, RawWriter, read_frames
from fw.views import engine_status, nat_change_json, nat_rows, pool_rows, summary


@dataclass
class Judge:
    """The engine's side of a replay, in whichever process judges the packets: each packet's
    verdict counted, and what the output needs of it (a JSON line, a table row's cells, the
    bytes for --out) made here, where the decision is."""

    engine: Engine
    as_json: bool
    rows_wanted: int
    want_out: bool
    tag_mappings: bool = False  # several workers and --nat: the mappings' order is merged
    totals: Counter = field(default_factory=Counter)
    next_tick: float | None = None
    peak: int = 0  # most connections in the table after a packet
    tags: dict = field(default_factory=dict)  # mapping key -> index of the packet that made it
    last_seen: float = 0.0  # the time of the last packet of the capture so far

    def run(self, times, classes: bytes, me: int, count: int, frames: list[tuple]) -> list:
        """One chunk: every packet's time lets the timers run, as with one engine; the
        packets of this worker's classes are judged."""
        results, mine, mappings = [], iter(frames), self.engine.nat.mappings
        self.last_seen = times[-1]
        for now, shard in zip(times, classes, strict=True):
            self.expire_due(now)
            if shard % count == me:
                index, data, not_ip, shard = next(mine)
                mappings.port_class = (CLASSES, shard)
                results.append(self.judge(Frame(index, now, data, not_ip)))
        return results

    def judge(self, frame: Frame) -> tuple:
        decision = self.engine.process(frame.data, now=frame.time)
        self.totals[decision.verdict] += 1
        self.peak = max(self.peak, len(self.engine.conntrack))
        if self.tag_mappings:
            self.tag_new_mappings(frame.index)
        shown = None
        if self.as_json:
            shown = json_line(row_json(frame, decision))
        elif self.rows_wanted == 0 or frame.index < self.rows_wanted:
            shown = row_parts(frame, decision)
        out = (decision.packet or frame.data) if self.want_out and decision.accepted else None
        return shown, out

    def expire_due(self, now: float) -> None:
        """Timers run at the first packet and then at the first packet of every new second of
        the capture: a schedule of the capture alone, the same in every worker, so each
        worker's connections and mappings age exactly as in one engine (which times a timer
        runs at show, in a mapping's next look). Expired connections are never used before
        then: conntrack checks each entry's time when it meets it."""
        if self.next_tick is not None and now < self.next_tick:
            return
        self.engine.expire(now)
        self.next_tick = math.floor(now) + 1.0
        if self.tag_mappings and len(self.tags) > len(self.engine.nat.mappings):
            by_key = self.engine.nat.mappings.by_key
            self.tags = {key: tag for key, tag in self.tags.items() if key in by_key}

    def tag_new_mappings(self, index: int) -> None:
        """New mappings come last in the table: tag them with the packet that made them."""
        by_key, tags = self.engine.nat.mappings.by_key, self.tags
        for key in reversed(by_key):
            if key in tags:
                break
            tags[key] = index

    def finish(self) -> dict:
        """What the merged output needs from this worker (several workers only): the NAT
        mappings as rows at the capture's last time, tagged for their place in one table."""
        counters = {chain: (c.hits, c.bytes, c.policy_hits, c.policy_bytes)
                    for chain, c in self.engine.compiled.counters.items()}
        mappings = []
        if self.tag_mappings:
            nat = self.engine.nat
            tags = [self.tags.get(key, -1) for key in nat.mappings.by_key]
            mappings = list(zip(tags, nat_rows(nat, self.last_seen), strict=True))
        return {"totals": self.totals, "counters": counters, "peak": self.peak,
                "mappings": mappings}


@dataclass
class Replay:
    """What this process prints, merged from the workers' results in capture order."""

    engine: Engine
    writer: RawWriter | None
    as_json: bool
    table: Table = field(default_factory=lambda: packet_table())
    totals: Counter = field(default_factory=Counter)
    first_time: float | None = None
    last_time: float = 0.0

    def show(self, frame: Frame, result: tuple) -> None:
        shown, out = result
        self.last_time = frame.time
        self.first_time = frame.time if self.first_time is None else self.first_time
        if out is not None:
            self.writer.write(out, frame.time)
        if self.as_json:
            sys.stdout.write(shown)
        elif shown is not None:
            text, verdict, ct_state, rule = shown
            self.table.add_row(str(frame.index), f"{frame.time - self.first_time:.6f}", text,
                               Text(verdict, style=VERDICT_STYLE[verdict]), ct_state, rule)


def run_replay(rules: str, capture: str, *, out: str | None, topology: str | None,
               as_json: bool, rows: int, nat: bool = False, workers: int = 1) -> int:
    engine = engine_for(rules, topology)
    count = worker_count(engine, workers)
    judge = Judge(engine, as_json, rows, out is not None, tag_mappings=nat and count > 1)
    sharder = Sharder(engine)
    writer = RawWriter(out) if out else None
    replay = Replay(engine, writer, as_json)
    damage: CaptureError | None = None
    complete = False
    pool = replay_workers.start(judge, count)
    try:
        with progress(enabled=not as_json and sys.stdout.isatty()) as bar:
            for frame, result in replay_workers.judged(
                    read_frames(capture), pool,
                    lambda f: sharder.port_class(f.data, f.time) if f.data else 0):
                replay.show(frame, result)
                bar(frame.index)
        complete = True
    except CaptureError as exc:
        damage = exc
    finally:
        if writer is not None:
            writer.close(keep=complete)  # --out appears only for a capture read to its end
    summaries = replay_workers.finish(pool)
    mappings = merge_summaries(engine, replay, summaries, count)
    if not as_json and (replay.totals or damage is None):
        show_summary(replay, rows)
    if nat:
        show_mappings(engine, replay.last_time, as_json, mappings)
    if engine.nat.pools:
        show_pools(engine, replay.last_time, as_json)
    if damage is not None:
        raise damage
    return 0


def worker_count(engine: Engine, wanted: int) -> int:
    """Workers as asked, unless the rules keep state that all flows share."""
    reason = one_engine_only(engine.ruleset) if wanted > 1 else None
    if reason is not None:
        stderr.print(f"fwlab: one worker, not {wanted}: {reason}", highlight=False,
                     markup=False)
        return 1
    return wanted


def merge_summaries(engine: Engine, replay: Replay, summaries: list[dict], count: int):
    """Totals, rule counters and NAT mappings of several workers, as one engine would have
    them; None with one worker (its engine is this one)."""
    for part in summaries:
        replay.totals.update(part["totals"])
    if count == 1:
        return None
    for part in summaries:
        for chain, (hits, sizes, policy_hits, policy_bytes) in part["counters"].items():
            counters = engine.compiled.counters[chain]
            counters.hits[:] = [a + b for a, b in zip(counters.hits, hits, strict=True)]
            counters.bytes[:] = [a + b for a, b in zip(counters.bytes, sizes, strict=True)]
            counters.policy_hits += policy_hits
            counters.policy_bytes += policy_bytes
    peak = sum(part["peak"] for part in summaries)
    if peak >= engine.conntrack.limit:
        stderr.print(f"fwlab: warning: the workers together held up to {peak:,} connections, "
                     f"over the table's limit ({engine.conntrack.limit:,}): one worker may "
                     "have judged differently (--workers 1)", highlight=False, markup=False)
    tagged = [item for part in summaries for item in part["mappings"]]
    return [row for _tag, row in sorted(tagged, key=lambda item: item[0])]


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


def row_parts(frame: Frame, d: Decision) -> tuple[str, str, str, str]:
    """A table row's packet, verdict, ct state and rule cells (the worker makes them)."""
    text = describe(frame)
    if d.packet is not None:
        text += f"\n  => {summary(decode(d.packet))}"
    return text, d.verdict, d.ct_state or "-", rule_cell(d)


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


def show_mappings(engine: Engine, now: float, as_json: bool, rows: list | None = None) -> None:
    """The NAT mapping table as the capture left it (ages and timeouts at its last packet);
    `rows` merged from several workers, in the order one engine would list them."""
    rows = nat_rows(engine.nat, now) if rows is None else rows
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
