"""`fwlab` run in this process, as `python -m fw` runs it: main() with its error handling.

A subprocess costs a second of imports; fuzz tests run the CLI thousands of times. A run that
outlives `deadline` seconds is interrupted (SIGALRM), which main() reports as an internal error
(exit 70): a hang on a FIFO fails the test instead of stalling it.
"""

from __future__ import annotations

import contextlib
import io
import signal
import sys
from dataclasses import dataclass

from fw.cli import main


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


def fwlab(*args: str, deadline: int = 20) -> Result:
    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["fwlab", *args]
    previous = signal.signal(signal.SIGALRM, _too_long)
    signal.alarm(deadline)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
        sys.argv = argv
    return Result(code, out.getvalue(), err.getvalue())


def _too_long(signum: int, frame: object) -> None:
    raise TimeoutError("the command did not finish in time")
