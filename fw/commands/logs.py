"""`fwlab logs`: the engine's log of a lab, for people (or `--json` for scripts)."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from fw.commands.options import JsonOpt, NameOpt, need_root


def logs(
    name: NameOpt = "default",
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new lines.")
    ] = False,
    lines: Annotated[int, typer.Option("--lines", "-n", help="Show the last N lines.")] = 20,
    as_json: JsonOpt = False,
) -> None:
    """The engine's log: drops, rejects, `log` statements, reloads, engine errors."""
    need_root("logs")
    from fw.lab.control import no_lab, worker_count
    from fw.lab.runtime import log_path

    path = log_path(name)
    if not path.parent.exists():
        raise no_lab(name)
    from fw.commands import kernel_lab
    from fw.lab.netns import read_state

    if kernel_lab.runs_kernel(read_state(name)):
        kernel_lab.logs()
    paths = [log_path(name, w) for w in range(worker_count(name))]
    for line in _last_lines(paths, lines):
        _print_log_line(line, as_json)
    if follow:
        try:
            _follow(paths, as_json)
        except KeyboardInterrupt:
            return


def _last_lines(paths: list[Path], lines: int) -> list[str]:
    """The last `lines` lines of the logs (each with its rotated part); several workers' logs
    merged in time order."""
    if lines <= 0:
        return []
    merged: list[str] = []
    for path in paths:
        old = path.with_name(path.name + ".1")
        text = "".join(p.read_text(errors="replace") for p in (old, path) if p.exists())
        merged += text.splitlines()
    if len(paths) > 1:
        merged.sort(key=_time_of)
    return merged[-lines:]


def _time_of(line: str) -> float:
    try:
        return float(json.loads(line).get("time", 0))
    except (ValueError, AttributeError, TypeError):
        return 0.0


class _Tail:
    """tail -F of one file: new lines as they come, across the daemon's rotation."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.f = path.open(errors="replace") if path.exists() else None
        if self.f is not None:
            self.f.seek(0, os.SEEK_END)

    def lines(self) -> list[str]:
        out = self.f.readlines() if self.f is not None else []
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return out
        if self.f is None or os.fstat(self.f.fileno()).st_ino != st.st_ino:
            if self.f is not None:
                out += self.f.readlines()  # what was written before the rotation
                self.f.close()
            self.f = self.path.open(errors="replace")
        return out


def _follow(paths: list[Path], as_json: bool) -> None:
    """New lines of every worker's log as they come; ends with the lab."""
    tails = [_Tail(path) for path in paths]
    while paths[0].parent.exists():
        for tail in tails:
            for line in tail.lines():
                _print_log_line(line, as_json)
        sys.stdout.flush()
        time.sleep(0.2)


def _print_log_line(line: str, as_json: bool) -> None:
    line = line.rstrip("\n")
    if not line:
        return
    if as_json:
        sys.stdout.write(line + "\n")
        return
    try:
        ev = json.loads(line)
    except ValueError:
        sys.stdout.write(line + "\n")
        return
    sys.stdout.write(format_log_event(ev) + "\n")


def format_log_event(ev: dict[str, Any]) -> str:
    """One log event as a line for people: time, what, where, the packet, the rule."""
    stamp = time.strftime("%H:%M:%S", time.localtime(ev.get("time", 0)))
    stamp += f".{int((ev.get('time', 0) % 1) * 1000):03d}"
    kind = ev.get("event", "?")
    if kind not in ("drop", "reject", "log", "crash"):
        details = {k: v for k, v in ev.items() if k not in ("time", "event")}
        return f"{stamp} {kind.upper():7} " + " ".join(f"{k}={v}" for k, v in details.items())
    parts = [stamp, f"{kind.upper():7}", f"{ev.get('chain') or ev.get('hook') or '':8}"]
    if kind == "log":
        parts.append(json.dumps(ev.get("prefix", "")))
        if ev.get("level"):
            parts.append(f"level {ev['level']}")
    for prefix in ev.get("prefixes") or ():
        parts.append(json.dumps(prefix))
    parts.append(_packet_text(ev.get("packet") or {}))
    ifs = [f"{k} {ev[k]}" for k in ("iif", "oif") if ev.get(k)]
    if ifs:
        parts.append(" ".join(ifs))
    if ev.get("ct_state"):
        parts.append(f"ct {ev['ct_state']}")
    if kind == "crash":
        parts.append(f"engine error {ev.get('error')} packet {ev.get('packet_hex', '')[:80]}")
        return " ".join(parts)
    rule = ev.get("rule")
    if rule:
        parts.append(f"<- {rule.get('file')}:{rule.get('line')} {rule.get('text') or ''}")
    elif kind != "log":
        parts.append(f"<- {ev.get('reason', 'policy')}")
    return " ".join(p for p in parts if p)


def _packet_text(p: dict[str, Any]) -> str:
    if not p or "src" not in p:
        return f"({p.get('len', '?')} bytes, undecodable)" if p else ""
    proto = p.get("proto", "?")
    if "sport" in p:
        src, dst = p["src"], p["dst"]
        if ":" in src:
            src, dst = f"[{src}]", f"[{dst}]"
        text = f"{proto} {src}:{p['sport']} -> {dst}:{p['dport']}"
        if p.get("flags"):
            text += f" [{p['flags']}]"
        return text
    text = f"{proto} {p['src']} -> {p['dst']}"
    if "icmp_type" in p:
        text += f" type {p['icmp_type']}/{p['icmp_code']}"
    return text
