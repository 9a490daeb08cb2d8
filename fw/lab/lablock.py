"""One command at a time changes a lab: `up`, `down`, `reload` and `restart` of one lab name hold
its build lock (an flock on /run/fwlab/NAME/build.lock) from start to end.

The loser waits, bounded, and then either finds the winner's work done (a second `up` says the
lab is up) or gives up with one line, `lab NAME is being built (fwlab up, pid N)`, exit 2. It
never touches what the winner is building.

`down` deletes the lab's directory, lock file included, while it holds the lock; a waiter then
holds a lock on a file nobody can open any more. So after every acquisition the holder checks that
the path still names the file it locked, and starts over when it does not.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import time
from collections.abc import Iterator
from typing import IO

from fw.errors import LabError
from fw.lab import runtime

__all__ = ["LabBusy", "lab_lock"]

POLL = 0.05
DOING = {"up": "being built", "down": "being taken down", "reload": "reloading its rules",
         "restart": "restarting its daemon", "attach": "being attached",
         "detach": "being detached"}


class LabBusy(LabError):
    """Another fwlab command holds the lab's lock and did not finish in time."""


@contextlib.contextmanager
def lab_lock(name: str, what: str, timeout: float = 30.0) -> Iterator[None]:
    """Hold lab `name`'s build lock while `what` (up, down, reload, restart) runs."""
    deadline = time.monotonic() + timeout
    f = _acquire(name, deadline)
    try:
        f.truncate(0)
        f.write(f"{what} {os.getpid()}\n")
        f.flush()
        yield
    finally:
        _forget_empty_dir(name)
        f.close()


def _acquire(name: str, deadline: float) -> IO[str]:
    path = runtime.build_lock_path(name)
    while True:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
        f = open(path, "a+")  # noqa: SIM115 - held until the lab command ends
        if _flock_until(f, deadline) and _still_there(f, path):
            return f
        holder = _holder(f)
        f.close()
        if time.monotonic() >= deadline:
            raise LabBusy(_busy_message(name, holder))


def _flock_until(f: IO[str], deadline: float) -> bool:
    while True:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(POLL)


def _still_there(f: IO[str], path: os.PathLike) -> bool:
    """True when `path` is still the file `f` locked (not removed by a `down` meanwhile)."""
    try:
        return os.stat(path).st_ino == os.fstat(f.fileno()).st_ino
    except FileNotFoundError:
        return False


def _holder(f: IO[str]) -> str:
    with contextlib.suppress(OSError, ValueError):
        f.seek(0)
        return f.read(100).strip()
    return ""


def _busy_message(name: str, holder: str) -> str:
    what, _, pid = holder.partition(" ")
    doing = DOING.get(what, "being changed")
    by = f" (fwlab {what}, pid {pid})" if pid else ""
    return f"lab {name!r} is {doing}{by}; try again when it is done"


def _forget_empty_dir(name: str) -> None:
    """A lock taken for a lab that does not exist (a `down` with nothing to do, an `up` that
    failed early) leaves no directory behind; waiters see the file gone and start over."""
    d = runtime.lab_dir(name)
    with contextlib.suppress(OSError):
        if [p.name for p in d.iterdir()] == [runtime.build_lock_path(name).name]:
            runtime.build_lock_path(name).unlink()
            d.rmdir()
