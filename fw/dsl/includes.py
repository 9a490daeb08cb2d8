"""The files of a rule set, each read and parsed once, and what including one would cost.

An include is textual: a file included twice (a diamond) gives its rules twice, as the language
says. What bounds the work is the total of lines, every inclusion counted, and the nesting depth.
Both are computed from the include graph *before* the walk descends, memoised per file, so 21
files each including the next twice (4 million lines once expanded) are refused at the first
include, at once, instead of being walked two million times.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lark import Tree

from fw.dsl.parse import parse_text
from fw.dsl.spans import unquote
from fw.errors import RulesError
from fw.userfiles import UnreadableFile, read_text

MAX_DEPTH = 32  # files included within files, the main file not counted
MAX_LINES = 1_000_000  # lines of the main file and of every inclusion, each time included


def resolved(path: str) -> str:
    """A file's identity: two spellings of one file are one file (for cycles and memos)."""
    return str(Path(path).resolve())


@dataclass
class Source:
    """One file as read: its text and tree, or why it has neither."""

    text: str | None = None
    tree: Tree | None = None
    problem: str | None = None  # why it cannot be read or is too long
    syntax: RulesError | None = None
    lines: int = 0
    includes: list[str] = field(default_factory=list)  # targets, relative to the cwd


class IncludeTooDeep(Exception):
    """Includes nest deeper than MAX_DEPTH; `path` is the first file past the limit."""

    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


@dataclass
class SourceFiles:
    """Read-once files, and per file its cost: (lines with its includes, nesting below it)."""

    files: dict[str, Source] = field(default_factory=dict)
    costs: dict[str, tuple[int, int]] = field(default_factory=dict)

    def get(self, path: str) -> Source:
        key = resolved(path)
        if key not in self.files:
            self.files[key] = read_source(path)
        return self.files[key]

    def cost(self, path: str, stack: list[str]) -> int:
        """Lines that including `path` from the files on `stack` brings; IncludeTooDeep if the
        includes below it nest past MAX_DEPTH. A cycle costs nothing here: the walk reports it."""
        return self._cost(path, stack)[0]

    def _cost(self, path: str, stack: list[str]) -> tuple[int, int]:
        key = resolved(path)
        if key in stack:
            return 0, 0
        if len(stack) > MAX_DEPTH:
            raise IncludeTooDeep(path)
        if key not in self.costs:
            self.costs[key] = self._count(path, key, stack)
        lines, height = self.costs[key]
        if len(stack) + height > MAX_DEPTH:
            raise IncludeTooDeep(path)
        return lines, height

    def _count(self, path: str, key: str, stack: list[str]) -> tuple[int, int]:
        source = self.get(path)
        lines, height = source.lines, 0
        stack.append(key)
        try:
            for target in source.includes:
                if lines > MAX_LINES:
                    break  # over already: the rest cannot make it acceptable
                more, below = self._cost(target, stack)
                lines, height = lines + more, max(height, below + 1)
        finally:
            stack.pop()
        return lines, height


def read_source(path: str) -> Source:
    try:
        text = read_text(path)
    except UnreadableFile as exc:
        return Source(problem=exc.why)
    lines = text.count("\n") + (not text.endswith("\n"))
    if lines > MAX_LINES:
        return Source(problem=f"has {lines:,} lines, over the limit of {MAX_LINES:,}")
    try:
        tree = parse_text(text, path)
    except RulesError as exc:
        return Source(text=text, syntax=exc, lines=lines)
    return Source(text=text, tree=tree, lines=lines, includes=include_targets(tree, path))


def include_targets(tree: Tree, path: str) -> list[str]:
    """Where the file's include statements point, as the walk will look for them."""
    parent = Path(path).parent
    return [str(parent / unquote(item.children[0]))
            for item in tree.children if isinstance(item, Tree) and item.data == "include"]
