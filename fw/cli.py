"""The `fwlab` command: thin typer wrappers around fw.commands; errors become one line, exit 2."""

from __future__ import annotations

import os
import sys
from typing import Annotated

import typer

from fw.commands.output import stderr
from fw.errors import FwlabError

app = typer.Typer(
    help="fwlab: see what a stateless and a stateful firewall let through, on real traffic.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

@app.callback()
def fwlab() -> None:
    """fwlab: see what a stateless and a stateful firewall let through, on real traffic."""


JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


@app.command()
def check(
    files: Annotated[list[str], typer.Argument(help="Rule files (.fw) to check.")],
    strict: Annotated[bool, typer.Option(help="Fail (exit 1) on warnings too.")] = False,
    as_json: JsonOpt = False,
) -> None:
    """Check rule files: errors and warnings with file, line and column."""
    from fw.commands.check import run_check

    raise typer.Exit(run_check(files, strict=strict, as_json=as_json))


def main() -> None:
    try:
        app()
    except FwlabError as exc:
        stderr.print(f"fwlab: {exc}", markup=False, highlight=False)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as exc:  # a bug: still one line for the user, the traceback on request
        if os.environ.get("FWLAB_DEBUG"):
            raise
        stderr.print(f"fwlab: internal error: {type(exc).__name__}: {exc} "
                     "(run with FWLAB_DEBUG=1 for the traceback)", markup=False)
        sys.exit(70)
