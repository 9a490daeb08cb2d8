"""Reading a file a user named: only regular files, and never more than a stated size.

Every user file (rule files and their includes, topology files, captures) is opened here. A path
can name anything: `/dev/zero` reads until memory runs out, a FIFO or `/dev/urandom` blocks or
never ends, and opening some devices has effects of its own. So the path is stat'ed *before* it
is opened and must be a regular file; the open does not block (O_NONBLOCK), and the opened file
must still be the one that was stat'ed, so a swap between the two calls is caught too.
"""

from __future__ import annotations

import functools
import os
import stat
import sys
from typing import BinaryIO

from fw.errors import FwlabError

MB = 1024 * 1024
MAX_TEXT_BYTES = 16 * MB  # a rule or topology file; a capture has no size limit
KINDS = {
    stat.S_IFDIR: "a directory", stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device",
    stat.S_IFBLK: "a block device", stat.S_IFSOCK: "a socket",
}


class UnreadableFile(FwlabError):
    """A file a user named cannot be read, or is not one fwlab will read; `why` says which."""

    def __init__(self, path: str, why: str) -> None:
        super().__init__(f"{path}: {why}")
        self.path = path
        self.why = why


def open_regular(path: str | os.PathLike) -> BinaryIO:
    """The file open for binary reading, if (and only if) it is a regular file."""
    name = os.fspath(path)
    before = _stat(name)
    _require_regular(name, before)
    try:
        fd = os.open(name, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except OSError as exc:
        raise UnreadableFile(name, _reason(exc)) from None
    after = os.fstat(fd)
    if (after.st_dev, after.st_ino) != (before.st_dev, before.st_ino):
        os.close(fd)
        raise UnreadableFile(name, "was replaced while being opened")
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb")


def read_bytes(path: str | os.PathLike, limit: int = MAX_TEXT_BYTES) -> bytes:
    """All of a regular file, or UnreadableFile when it holds more than `limit` bytes."""
    name = os.fspath(path)
    if name == STDIN:
        return stdin_bytes(limit)
    with open_regular(name) as f:
        _require_size(name, os.fstat(f.fileno()).st_size, limit)
        data = f.read(limit + 1)  # st_size can lie (/proc) or grow while we read
    _require_size(name, len(data), limit)
    return data


def read_text(path: str | os.PathLike, limit: int = MAX_TEXT_BYTES) -> str:
    """A regular file's text: UTF-8, no NUL bytes, at most `limit` bytes."""
    name = os.fspath(path)
    try:
        text = read_bytes(name, limit).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise UnreadableFile(name, f"is not UTF-8 text (byte {exc.start})") from None
    if "\x00" in text:
        raise UnreadableFile(name, "is not a text file (it holds NUL bytes)")
    return text


def _stat(name: str) -> os.stat_result:
    try:
        return os.stat(name)
    except (OSError, ValueError) as exc:
        raise UnreadableFile(name, _reason(exc)) from None


def _require_regular(name: str, st: os.stat_result) -> None:
    if not stat.S_ISREG(st.st_mode):
        kind = KINDS.get(stat.S_IFMT(st.st_mode), "not a regular file")
        raise UnreadableFile(name, f"is {kind}, not a regular file")


def _require_size(name: str, size: int, limit: int) -> None:
    if size > limit:
        raise UnreadableFile(name, f"is larger than the limit of {_size(limit)} for this file")


def _size(n: int) -> str:
    return f"{n // MB} MB" if n % MB == 0 else f"{n:,} bytes"


def _reason(exc: OSError | ValueError) -> str:
    """`no such file or directory`, lower case, as the rest of fwlab's messages are."""
    if isinstance(exc, ValueError):  # e.g. a NUL byte in the path
        return f"is not a valid path ({exc})"
    return (exc.strerror or str(exc)).lower()


STDIN = "-"  # the name that means standard input, for every command that reads a user file


@functools.cache
def stdin_bytes(limit: int = MAX_TEXT_BYTES) -> bytes:
    """Standard input, read once (a command may load the same rule file twice), within the
    same size limit as a file."""
    data = sys.stdin.buffer.read(limit + 1)
    _require_size("<stdin>", len(data), limit)
    return data
