"""One error hierarchy for everything a user can get wrong.

Every error that reaches the CLI is a FwlabError: it becomes one line (with the source line and a
caret when there is a span) and exit status 2, never a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Span:
    """Where something stands in a rule file: 1-based line and column, end exclusive."""

    file: str
    line: int
    column: int
    end_line: int = 0
    end_column: int = 0

    def __str__(self) -> str:
        """`file:line:col`, or just `file` for a problem with the file as a whole (line 0)."""
        return f"{self.file}:{self.line}:{self.column}" if self.line else self.file


class FwlabError(Exception):
    """Base of every error fwlab reports to a user."""

    def __init__(self, message: str, span: Span | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.span = span

    def __str__(self) -> str:
        return f"{self.span}: error: {self.message}" if self.span else self.message


class RulesError(FwlabError):
    """A rule file does not parse or does not make sense; carries every diagnostic found."""

    def __init__(self, message: str, span: Span | None = None, diagnostics: list | None = None):
        super().__init__(message, span)
        self.diagnostics = diagnostics or []


class PacketSpecError(FwlabError):
    """A packet written as text (for `explain`) is not one fwlab can build."""


class CaptureError(FwlabError):
    """A capture file is not a pcap/pcapng, or is cut short."""


class TopologyError(FwlabError):
    """A topology file is not valid."""


class LabError(FwlabError):
    """The lab cannot be built, reached or torn down."""
