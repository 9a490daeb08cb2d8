"""Diagnostics: what `check` prints, and what a RulesError carries.

The form is the compiler one (`file:line:col: severity: message`, the source line, a caret under
the offending token) because editors and CI logs already know how to jump to it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from fw.errors import Span

Severity = Literal["error", "warning"]


@dataclass(frozen=True, slots=True)
class Diagnostic:
    severity: Severity
    message: str
    span: Span | None
    source_line: str = ""

    @property
    def headline(self) -> str:
        where = f"{self.span}: " if self.span else ""
        return f"{where}{self.severity}: {self.message}"

    def caret(self) -> str:
        """The source line and a caret under the span, or '' when there is no line to show."""
        if not self.span or not self.source_line:
            return ""
        start = max(self.span.column - 1, 0)
        end = self.span.end_column - 1 if self.span.end_line == self.span.line else 0
        width = max(end - start, 1)
        line = self.source_line.rstrip("\r\n").expandtabs(1)
        return f"    {line}\n    {' ' * start}{'^' * width}"

    def render(self) -> str:
        caret = self.caret()
        return f"{self.headline}\n{caret}" if caret else self.headline

    def as_json(self) -> dict:
        span = self.span
        return {
            "file": span.file if span else None,
            "line": span.line if span else None,
            "column": span.column if span else None,
            "severity": self.severity,
            "message": self.message,
        }


@dataclass
class Sources:
    """The text of every file read, so a diagnostic can quote its line."""

    texts: dict[str, str] = field(default_factory=dict)
    split: dict[str, list[str]] = field(default_factory=dict, repr=False)

    def line(self, span: Span | None) -> str:
        if span is None or span.file not in self.texts:
            return ""
        lines = self.split.get(span.file)
        if lines is None:  # split once: a 10,000-rule file may have thousands of warnings
            lines = self.split[span.file] = self.texts[span.file].splitlines()
        return lines[span.line - 1] if 0 < span.line <= len(lines) else ""


@dataclass
class Collector:
    """Gathers diagnostics in the order found; errors do not stop the walk."""

    sources: Sources = field(default_factory=Sources)
    items: list[Diagnostic] = field(default_factory=list)
    warned: set = field(default_factory=set, repr=False)

    def error(self, message: str, span: Span | None) -> None:
        self.items.append(Diagnostic("error", message, span, self.sources.line(span)))

    def warning(self, message: str, span: Span | None) -> None:
        """A warning, once: a define used twice is not warned about twice."""
        key = (message, span)
        if key in self.warned:
            return
        self.warned.add(key)
        self.items.append(Diagnostic("warning", message, span, self.sources.line(span)))

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.items if d.severity == "error"]
