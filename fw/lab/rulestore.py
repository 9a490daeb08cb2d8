"""The rules a lab runs: read and compiled by the command that asks for them, run by the daemon.

The daemon never reads a user's rule file. `up` and `reload` compile the file in their own process
with a deadline, then hand the daemon the compiled rule set: whatever makes reading hang (a file
system that does not answer; FIFOs and devices are refused before they are opened, see
fw/userfiles.py) ends that one command with exit 2, never the control plane. The daemon keeps
what it runs in /run/fwlab/NAME/rules.pickle, so a daemon restarted by its supervisor runs
exactly the rules that ran before, even when the file on disk has changed or broken since.

Pickle, because the rule set is a tree of pydantic models with source spans (which the log needs
and a JSON dump leaves out). Only root can write the file or the control socket that carries it,
and root can run anything anyway.
"""

from __future__ import annotations

import base64
import contextlib
import os
import pickle
import signal
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from fw.errors import LabError
from fw.lab import runtime

if TYPE_CHECKING:
    from fw.model import RuleSet

__all__ = ["COMPILE_SECONDS", "RulesTimeout", "StoredRules", "compile_rules", "decode",
           "encode", "load_stored", "store"]

COMPILE_SECONDS = 10.0


class RulesTimeout(LabError):
    """Reading and compiling a rule file took longer than its deadline."""


class _Expired(BaseException):
    """Raised by the timer inside the compiler: not an Exception, so no `except Exception` (or
    FwlabError) in the language's code can mistake it for a problem of the file."""


@dataclass(frozen=True)
class StoredRules:
    """A compiled rule set and the file it came from (status and the log name the file)."""

    path: str
    ruleset: RuleSet


def compile_rules(path: Path, seconds: float = COMPILE_SECONDS) -> RuleSet:
    """The rule set of `path`, or RulesError (diagnostics attached), or RulesTimeout when reading
    and compiling take longer than `seconds`."""
    from fw.lab.engine_glue import load_rules

    why = f"rule file {path}: reading and compiling it took longer than {seconds:.1f} s; nothing " \
          "changed"
    with _deadline(seconds, why):
        return load_rules(path)


@contextlib.contextmanager
def _deadline(seconds: float, message: str) -> Iterator[None]:
    """Raise RulesTimeout(message) in this thread after `seconds`. An interval timer interrupts a
    blocking open() or read() of a FIFO too (the handler runs and raises). Only the main thread
    receives signals; elsewhere there is no deadline."""
    if threading.current_thread() is not threading.main_thread() or seconds <= 0:
        yield
        return

    def expired(signum: int, frame: object) -> None:
        raise _Expired

    old = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    except _Expired:
        raise RulesTimeout(message) from None
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


def encode(stored: StoredRules) -> str:
    """For the control socket: one JSON string."""
    return base64.b64encode(pickle.dumps(stored, protocol=pickle.HIGHEST_PROTOCOL)).decode()


def decode(text: str) -> StoredRules:
    stored = pickle.loads(base64.b64decode(text))
    if not isinstance(stored, StoredRules):
        raise ValueError("not a compiled rule set")
    return stored


def store(name: str, stored: StoredRules) -> None:
    """Write what lab `name` runs, atomically (a restart never reads half a file), root only."""
    path = runtime.rules_store_path(name)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as f:
        pickle.dump(stored, f, protocol=pickle.HIGHEST_PROTOCOL)
    os.replace(tmp, path)


def load_stored(name: str) -> StoredRules | None:
    """What lab `name` ran last, or None when nothing is stored."""
    try:
        data = runtime.rules_store_path(name).read_bytes()
    except FileNotFoundError:
        return None
    stored = pickle.loads(data)
    if not isinstance(stored, StoredRules):
        raise LabError(f"{runtime.rules_store_path(name)}: not a compiled rule set")
    return stored
