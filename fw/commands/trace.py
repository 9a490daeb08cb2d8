"""`fwlab trace MATCH`: the engine's decision on every packet that matches, live, as `explain`
prints it (the chain, every rule tried, the verdict), like `nft monitor trace`; bounded by
--seconds and --count."""

from __future__ import annotations

import time
from typing import Annotated, Any

import typer

from fw.commands.options import JsonOpt, NameOpt, need_root
from fw.errors import LabError

POLL = 0.2  # seconds between two questions to the daemon


def trace(
    match: Annotated[str, typer.Argument(
        help="Which packets, in the rules language: e.g. 'tcp dport 80', "
             "'iif wan ip saddr 203.0.113.66' (not ct state: that is what is being decided).")],
    name: NameOpt = "default",
    seconds: Annotated[float, typer.Option(help="Stop after this many seconds.")] = 10.0,
    count: Annotated[int | None, typer.Option(help="Stop after N packets.")] = None,
    as_json: JsonOpt = False,
) -> None:
    """Trace the engine's decisions on matching packets, live: chain, rules tried, verdict."""
    need_root("trace")
    from fw.commands.ct_follow import fwlab_engine_only
    from fw.commands.output import stderr
    from fw.lab.control import worker_count

    fwlab_engine_only(name, "trace")
    start = {"cmd": "trace-start", "match": match, "seconds": seconds, "count": count}
    idents = {w: ask(name, start, w)["id"] for w in range(worker_count(name))}
    stderr.print(f"tracing {match!r} in lab {name!r} for {seconds:g} s"
                 + (f" or {count} packets" if count else ""), markup=False)
    seen = 0
    try:
        while idents and (count is None or seen < count):
            records = []
            for worker, ident in list(idents.items()):  # every worker: each has its flows
                answer = ask(name, {"cmd": "trace-poll", "id": ident}, worker)
                records += answer["records"]
                if answer["done"]:
                    del idents[worker]
            for record in sorted(records, key=lambda r: r["time"])[:_left(count, seen)]:
                show_record(record, as_json)
                seen += 1
            time.sleep(POLL if idents else 0)
    except KeyboardInterrupt:
        pass
    for worker, ident in idents.items():
        ask(name, {"cmd": "trace-stop", "id": ident}, worker)
    stderr.print(f"{seen} packet(s) traced", markup=False)


def _left(count: int | None, seen: int) -> int | None:
    return None if count is None else count - seen


def ask(name: str, request: dict[str, Any], worker: int = 0) -> dict[str, Any]:
    from fw.lab import control

    answer = control.request(name, request, worker=worker)
    if not answer.get("ok"):
        raise LabError(answer.get("error", f"lab {name!r}: the daemon refused"))
    return answer


def show_record(record: dict[str, Any], as_json: bool) -> None:
    """One traced packet: a heading with its time and hook, then explain's own lines."""
    from fw.commands.explain import show
    from fw.commands.output import print_json_line, stdout

    if as_json:
        print_json_line(record)
        return
    clock = time.strftime("%H:%M:%S", time.localtime(record["time"]))
    stdout.print(f"\n[bold]{clock}.{int(record['time'] % 1 * 1000):03d}[/] {record['hook']}")
    show(record)
