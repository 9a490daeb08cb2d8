"""Give the daemon's memory back to the system after its connection table has shrunk.

Why: a flood fills the connection table (up to `--conntrack-max` entries, some hundred bytes
each), the entries expire, and CPython frees them, but the C library keeps the freed heap pages
for the process (glibc's free() returns memory to the system only from the top of its heap, and
the table's growth interleaves long-lived objects with the entries). The daemon's resident size
then stays at its peak for good. glibc's malloc_trim(0) hands every free page back (madvise), in
a few milliseconds. It is called once the table has fallen to a quarter of its peak since the
last call, and only when that peak was large (TRIM_MIN entries), so a busy lab never pays for it
on the packet path. gc.collect() is not called: the engine's objects hold no reference cycles
(refcounting frees them at once, measured: a collection after expiry gave back nothing), and a
full collection of a large heap would hold up packets for a tenth of a second.

Without glibc (musl, macOS) there is nothing to call and `Trimmer.trim` does nothing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
from collections.abc import Callable

__all__ = ["TRIM_MIN", "Trimmer", "malloc_trim"]

TRIM_MIN = 10_000  # entries: below this peak the memory at stake is a few MB, not worth a call


def _load_trim() -> Callable[[int], int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        return libc.malloc_trim  # type: ignore[no-any-return]
    except (OSError, AttributeError):
        return None


_TRIM = _load_trim()


def malloc_trim() -> bool:
    """Return the C library's free heap pages to the system; False when it cannot."""
    return bool(_TRIM is not None and _TRIM(0))


class Trimmer:
    """Watches the table's size; `note(entries)` trims when it has fallen far from its peak."""

    def __init__(self, trim: Callable[[], bool] = malloc_trim, minimum: int = TRIM_MIN) -> None:
        self.peak = 0
        self.trims = 0
        self._trim, self._minimum = trim, minimum

    def note(self, entries: int) -> bool:
        """True when this call trimmed (the peak then starts again from `entries`)."""
        self.peak = max(self.peak, entries)
        if self.peak < self._minimum or entries > self.peak // 4:
            return False
        self._trim()
        self.trims += 1
        self.peak = entries
        return True
