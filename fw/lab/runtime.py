"""Where a lab keeps its runtime files, and what /proc says about its processes.

Every file of lab NAME lives in `/run/fwlab/NAME/` (`$FWLAB_RUN_DIR` moves the root), which `down`
removes. This module is the one place that knows those names, so the daemon, the supervisor and
the commands cannot disagree about them:

    lab.json         the lab's state: topology, namespaces, processes started (fw/lab/netns.py)
    lock             held briefly while lab.json is rewritten
    build.lock       held by `up`, `down`, `reload`, `restart` for the whole command (lablock.py)
    control.sock     the daemon's control socket (root only); with several workers, worker
                     W > 0 has control.W.sock
    rules.pickle     the compiled rules the daemon runs (rulestore.py)
    supervisor.json  the supervisor's pid, the daemon's pid, restarts (supervisor.py)
    engine.log(.1)   the engine's JSON log (worker W > 0: engine.W.log)
    daemon.out       the output of the supervisor and the daemon

A PID alone does not name a process (PIDs are reused), so a process is recorded as its PID plus
its start time from /proc/PID/stat, and only signalled while both still match.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from fw.errors import LabError

__all__ = [
    "RUN_DIR",
    "build_lock_path",
    "check_lab_name",
    "control_path",
    "daemon_out_path",
    "lab_dir",
    "log_path",
    "pid_alive",
    "proc_start_time",
    "rules_store_path",
    "same_process",
    "state_lock_path",
    "state_path",
    "supervisor_path",
]

RUN_DIR = Path(os.environ.get("FWLAB_RUN_DIR", "/run/fwlab"))
LAB_NAME_RE = re.compile(r"^[a-z0-9]{1,20}$")


def check_lab_name(name: str) -> str:
    """The name itself when it is a valid lab name (it becomes part of paths and namespaces)."""
    if not LAB_NAME_RE.match(name):
        raise LabError(f"lab name {name!r}: 1 to 20 lower-case letters and digits")
    return name


def lab_dir(name: str) -> Path:
    return RUN_DIR / check_lab_name(name)


def state_path(name: str) -> Path:
    return lab_dir(name) / "lab.json"


def state_lock_path(name: str) -> Path:
    return lab_dir(name) / "lock"


def build_lock_path(name: str) -> Path:
    return lab_dir(name) / "build.lock"


def _of_worker(file: str, worker: int) -> str:
    """Worker 0's file is the one a lab with one worker has; worker W's is FILE.W.SUFFIX."""
    if not worker:
        return file
    stem, _, suffix = file.rpartition(".")
    return f"{stem}.{worker}.{suffix}"


def control_path(name: str, worker: int = 0) -> Path:
    return lab_dir(name) / _of_worker("control.sock", worker)


def rules_store_path(name: str) -> Path:
    return lab_dir(name) / "rules.pickle"


def supervisor_path(name: str) -> Path:
    return lab_dir(name) / "supervisor.json"


def read_supervisor_state(name: str) -> dict[str, Any] | None:
    """What the supervisor of lab `name` wrote last (supervisor.py), or None."""
    try:
        state = json.loads(supervisor_path(name).read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


def log_path(name: str, worker: int = 0) -> Path:
    return lab_dir(name) / _of_worker("engine.log", worker)


def daemon_out_path(name: str) -> Path:
    return lab_dir(name) / "daemon.out"


# -- /proc --------------------------------------------------------------------------------------


def _stat_fields(pid: int) -> list[str] | None:
    """/proc/PID/stat from field 3 on (state, ppid, ...), or None when there is no such process.
    The command name (field 2) may hold spaces and parentheses; it ends at the last ')'."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    return stat[stat.rindex(")") + 2 :].split()


def proc_start_time(pid: int) -> int | None:
    """Field 22 of /proc/PID/stat, the start time in clock ticks: with the PID, it names a
    process rather than a number the kernel may give to another one."""
    fields = _stat_fields(pid)
    return int(fields[19]) if fields else None


def pid_alive(pid: int) -> bool:
    """True while the process exists and is not a zombie (a zombie has finished; only its
    parent's wait is missing)."""
    fields = _stat_fields(pid)
    return fields is not None and fields[0] != "Z"


def same_process(pid: int, start: int | None) -> bool:
    """True when `pid` is alive and still the process that started at `start`."""
    return start is not None and pid_alive(pid) and proc_start_time(pid) == start
