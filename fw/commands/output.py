"""Where command output goes: rich consoles for people, plain JSON for scripts."""

from __future__ import annotations

import json
import sys

from rich.console import Console

# Piped output is read by people in logs and by grep: wide enough that rows do not wrap.
stdout = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
stderr = Console(stderr=True, highlight=False, soft_wrap=True)


def print_json(data: object) -> None:
    """One JSON document on stdout; never coloured, whatever the terminal."""
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def print_json_line(data: object) -> None:
    sys.stdout.write(json.dumps(data, separators=(",", ":"), default=str) + "\n")
