"""The daemon's log: JSON lines, size-capped, with a rate limit for per-packet lines.

Every drop and reject and every `log` statement is one line of `engine.log`; a scan must neither
fill the disk (the file rotates) nor slow the packet path (per-packet lines are limited, as
nftables' `limit rate`, and what is held back is counted).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from pathlib import Path
from typing import Any

from fw.core.protocols import PROTO_NAMES
from fw.core.text import address_text

LOG_LINES_PER_SECOND = 200.0
LOG_BURST = 1000.0
MAX_LOG_BYTES = 8 * 1024 * 1024

class LineLimit:
    """A token bucket for per-packet log lines (as nftables' `limit rate`): a scan or a flood
    must not turn the log into the bottleneck that makes the queue overflow. What it holds back
    is counted and reported once a second by the timer."""

    def __init__(self, rate: float = LOG_LINES_PER_SECOND, burst: float = LOG_BURST) -> None:
        self.rate, self.burst = rate, burst
        self.tokens, self.last = burst, 0.0
        self.held_back = 0

    def allow(self, now: float) -> bool:
        self.tokens = min(self.burst, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        self.held_back += 1
        return False

    def take_held_back(self) -> int:
        count, self.held_back = self.held_back, 0
        return count



class JsonLog:
    """JSON lines in a file whose size is capped: when it passes `max_bytes` it is renamed to
    `<file>.1` (replacing the previous one) and a new file begun, so a flood of drops (a port
    scan) costs at most twice `max_bytes` of disk in /run (a tmpfs: memory)."""

    def __init__(self, path: Path, max_bytes: int = MAX_LOG_BYTES) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.lines = 0
        self._lock = threading.Lock()
        self._file = path.open("a", encoding="utf-8")
        self._size = self._file.tell()

    def write(self, event: dict[str, Any]) -> None:
        line = json.dumps(event, separators=(",", ":"), default=str) + "\n"
        with self._lock:
            if self._size + len(line) > self.max_bytes and self._size:
                self._rotate()
            self._file.write(line)
            self._size += len(line)
            self.lines += 1

    def _rotate(self) -> None:
        self._file.close()
        os.replace(self.path, self.path.with_name(self.path.name + ".1"))
        self._file = self.path.open("a", encoding="utf-8")
        self._size = 0

    def flush(self) -> None:
        with self._lock, contextlib.suppress(ValueError, OSError):
            self._file.flush()

    def close(self) -> None:
        with self._lock, contextlib.suppress(OSError):
            self._file.close()


def packet_summary(payload: bytes, wire_len: int | None = None) -> dict[str, Any]:
    """Addresses, protocol and ports of a packet, for a log line (decoded only when logging).
    `wire_len`: its size when `payload` is only its first bytes (the queue's copy range)."""
    from fw.engine.packet import decode

    size = len(payload) if wire_len is None else wire_len
    try:
        pkt = decode(payload, wire_len)
    except Exception:
        return {"len": size, "undecodable": True}
    if pkt.family not in (4, 6) or len(payload) < (20 if pkt.family == 4 else 40):
        return {"len": size, "undecodable": True, "invalid": pkt.invalid}
    out: dict[str, Any] = {"len": size, "family": pkt.family}
    out["src"], out["dst"] = address_text(pkt.family, pkt.src), address_text(pkt.family, pkt.dst)
    out["proto"] = PROTO_NAMES.get(pkt.proto, pkt.proto)
    if pkt.sport >= 0:
        out["sport"], out["dport"] = pkt.sport, pkt.dport
    if pkt.icmp_type >= 0:
        out["icmp_type"], out["icmp_code"] = pkt.icmp_type, pkt.icmp_code
    if pkt.proto == 6 and pkt.sport >= 0:
        out["flags"] = _tcp_flags(pkt.tcp_flags)
    if pkt.invalid:
        out["invalid"] = pkt.invalid
    return out


def _tcp_flags(bits: int) -> str:
    names = ("fin", "syn", "rst", "psh", "ack", "urg", "ece", "cwr")
    return ",".join(n for i, n in enumerate(names) if bits & (1 << i))
