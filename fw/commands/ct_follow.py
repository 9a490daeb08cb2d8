"""`fwlab conntrack --follow`: the engine's connection tracking events, as `conntrack -E` prints
them (NEW, UPDATE, DESTROY), with the reason a connection went; `--json` one object a line."""

from __future__ import annotations

import time
from typing import Any

from fw.errors import LabError

POLL = 0.2  # seconds between two questions to the daemon


def follow_events(name: str, as_json: bool, seconds: float | None, count: int | None) -> None:
    """Print events from now on until `seconds` pass, `count` events came, or Ctrl-C."""
    from fw.commands.output import stderr
    from fw.lab.control import worker_count

    fwlab_engine_only(name, "conntrack --follow")
    deadline = time.monotonic() + seconds if seconds is not None else None
    after = {w: ask(name, None, w)["last"] for w in range(worker_count(name))}  # per worker
    stderr.print(f"following the connection tracking events of lab {name!r}"
                 + (f" for {seconds:g} s" if seconds is not None else "")
                 + (f" or {count} events" if count is not None else ""), markup=False)
    shown = 0
    try:
        while deadline is None or time.monotonic() < deadline:
            events = []
            for worker in after:
                answer = ask(name, after[worker], worker)
                after[worker] = answer["last"]
                if answer.get("lost"):
                    stderr.print(f"({answer['lost']} events lost: the daemon keeps the last "
                                 "ones)")
                events += answer["events"]
            events.sort(key=lambda e: e["time"])  # several workers: in time order
            for event in events[: None if count is None else count - shown]:
                print_event(event, as_json)
                shown += 1
            if count is not None and shown >= count:
                return
            time.sleep(POLL)
    except KeyboardInterrupt:
        return


def fwlab_engine_only(name: str, what: str) -> None:
    """Events and traces come from fwlab's engine; a kernel lab has tools of its own."""
    from fw.commands import kernel_lab
    from fw.lab.netns import attach, read_state

    if kernel_lab.runs_kernel(read_state(name)):
        raise LabError(f"lab {name!r} runs the kernel engine: `fwlab {what}` follows fwlab's; "
                       f"try `ip netns exec {attach(name).firewall_ns} conntrack -E` "
                       "or `nft monitor trace` there")


def ask(name: str, after: int | None, worker: int = 0) -> dict[str, Any]:
    from fw.lab import control

    answer = control.request(name, {"cmd": "ct-events", "after": after}, worker=worker)
    if not answer.get("ok"):
        raise LabError(f"lab {name!r}: {answer.get('error', 'the daemon refused')}")
    return answer


def print_event(event: dict[str, Any], as_json: bool) -> None:
    from fw.commands.output import print_json_line

    if as_json:
        print_json_line(event)
    else:
        print(event_line(event), flush=True)


def event_line(e: dict[str, Any]) -> str:
    """`    [NEW] tcp      6 120 SYN_SENT src=... dst=... sport=... dport=... [UNREPLIED] src=...`
    as conntrack-tools has it; a DESTROY has no timer and no state, and ends with its reason."""
    head = f"{'[' + e['event'] + ']':>9} {e['proto']:<8} {e['proto_num']} "
    if e["event"] != "DESTROY":
        head += f"{e['timeout']} "
        if e["proto"] == "tcp":
            head += f"{e['state']} "
    parts = [head + fields(e["orig"])]
    if e["unreplied"]:
        parts.append("[UNREPLIED]")
    parts.append(fields(e["reply"]))
    if e["assured"]:
        parts.append("[ASSURED]")
    if e.get("reason"):
        parts.append(f"reason={e['reason']}")
    return " ".join(parts)


def fields(direction: dict[str, Any]) -> str:
    return " ".join(f"{key}={value}" for key, value in direction.items())
