"""`fwlab` run in this process, as `python -m fw` runs it: main() with its error handling.

A subprocess costs a second of imports; fuzz tests run the CLI thousands of times.
"""

from __future__ import annotations

import contextlib
import io
import sys
from dataclasses import dataclass

from fw.cli import main


@dataclass(frozen=True)
class Result:
    code: int
    out: str
    err: str


def fwlab(*args: str) -> Result:
    out, err = io.StringIO(), io.StringIO()
    argv = sys.argv
    sys.argv = ["fwlab", *args]
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    finally:
        sys.argv = argv
    return Result(code, out.getvalue(), err.getvalue())
