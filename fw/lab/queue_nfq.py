"""NFQUEUE through the `netfilterqueue` package (`--backend netfilterqueue`).

netfilterqueue reads one packet per recv() into a 4 KiB buffer and calls a callback per packet;
it cannot ask for GSO packets (so the kernel segments them and finishes their checksums before
queueing: the engine sees wire-sized packets) nor send batched verdicts. This backend collects
what one non-blocking drain finds (through `run_socket` with a reader that says "no more" once
`max_batch` packets are held) and gives the verdicts afterwards: netfilterqueue allows a verdict
after its callback has returned.
"""

from __future__ import annotations

import contextlib
import errno
import select
import socket
from collections.abc import Sequence
from typing import Any

from fw.errors import LabError
from fw.lab.queue_backend import HOOK_NAMES, IfNames, QueuedPacket, Verdict

__all__ = ["NetfilterqueueBackend"]

SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
DEFAULT_RCVBUF = 16 * 1024 * 1024  # bytes requested; the kernel reports (and grants) twice that
DEFAULT_MAX_LEN = 4096  # packets the kernel holds for the queue before it drops (queue_dropped)
MAX_BATCH = 64


class _BoundedReader:
    """The socket netfilterqueue's run_socket() reads: EAGAIN once a batch is full, ENOBUFS
    counted (run_socket then goes on reading)."""

    def __init__(self, sock: socket.socket, backend: NetfilterqueueBackend) -> None:
        self.sock, self.backend = sock, backend

    def recv(self, size: int) -> bytes:
        if len(self.backend._held) >= self.backend.max_batch:
            raise BlockingIOError(errno.EAGAIN, "batch full")
        try:
            return self.sock.recv(size)
        except OSError as exc:
            if exc.errno == errno.ENOBUFS:
                self.backend.enobufs += 1
            raise


class NetfilterqueueBackend:
    """One NFQUEUE bound with netfilterqueue in this process's namespace."""

    name = "netfilterqueue"

    def __init__(
        self,
        queue_num: int = 0,
        *,
        max_len: int = DEFAULT_MAX_LEN,
        rcvbuf: int = DEFAULT_RCVBUF,
        max_batch: int = MAX_BATCH,
        ifnames: IfNames | None = None,
    ) -> None:
        self.queue_num, self.max_len, self.max_batch = queue_num, max_len, max_batch
        self.requested_rcvbuf = rcvbuf
        self.rcvbuf: int | None = None
        self.packets = self.accepted = self.dropped = self.modified = 0
        self.batches = self.enobufs = self.errors = 0
        self._nfq: Any = None
        self._sock: socket.socket | None = None
        self._reader: _BoundedReader | None = None
        self._held: list[Any] = []  # netfilterqueue Packets of the batch, in order
        self._batch: list[QueuedPacket] = []
        self._ifname = ifnames or IfNames()

    def set_copy_range(self, size: int) -> None:
        """Whole packets always: netfilterqueue's reads are per packet anyway, and the copy of
        a packet without GSO is at most an MTU."""

    def fileno(self) -> int:
        return self._sock.fileno() if self._sock is not None else -1

    def bind(self) -> None:
        from netfilterqueue import NetfilterQueue  # the only place the package is named

        nfq = NetfilterQueue()
        try:
            # sock_len goes to nfnl_rcvbufsiz (SO_RCVBUFFORCE); set again and read back below
            nfq.bind(
                self.queue_num, self._collect, max_len=self.max_len, sock_len=self.requested_rcvbuf
            )
        except OSError as exc:
            raise LabError(f"binding NFQUEUE {self.queue_num}: {exc}") from exc
        self._nfq = nfq
        sock = socket.fromfd(nfq.get_fd(), socket.AF_NETLINK, socket.SOCK_RAW)  # a dup
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, self.requested_rcvbuf)
        self.rcvbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        sock.setblocking(False)  # shared with netfilterqueue's fd: its reads stop at EAGAIN too
        self._sock, self._reader = sock, _BoundedReader(sock, self)

    def _collect(self, pkt: Any) -> None:
        """netfilterqueue's callback: hold the packet for the batch. Never raises (an exception
        would be lost inside netfilterqueue's C loop): a packet it cannot read is dropped."""
        try:
            self._batch.append(
                QueuedPacket(
                    pkt.id,
                    HOOK_NAMES.get(pkt.hook, str(pkt.hook)),
                    self._ifname(pkt.indev),
                    self._ifname(pkt.outdev),
                    pkt.get_payload(),
                    0,
                    pkt.mark,
                )
            )
            self._held.append(pkt)
        except Exception:
            self.errors += 1
            with contextlib.suppress(Exception):
                pkt.drop()

    def receive(self, timeout: float | None) -> list[QueuedPacket]:
        if self._sock is None or self._reader is None:
            raise LabError("the queue is not bound")
        ready, _, _ = select.select([self._sock], [], [], timeout)
        if ready:
            self._nfq.run_socket(self._reader)  # until EAGAIN: empty, or the batch is full
        batch, self._batch = self._batch, []
        if batch:
            self.batches += 1
            self.packets += len(batch)
        return batch

    def answer(self, packets: Sequence[QueuedPacket], verdicts: Sequence[Verdict]) -> None:
        held, self._held = self._held, []
        if len(held) != len(verdicts) or len(held) != len(packets):
            verdicts = [Verdict(False)] * len(held)  # not this batch's: nothing passes unjudged
            packets = [QueuedPacket(0, "", None, None, b"")] * len(held)
        for pkt, p, v in zip(held, packets, verdicts, strict=True):
            try:
                self._verdict(pkt, v, v.payload is not None and v.payload != p.payload)
            except Exception:
                self.errors += 1
                with contextlib.suppress(Exception):
                    pkt.drop()

    def _verdict(self, pkt: Any, v: Verdict, rewritten: bool) -> None:
        if not v.accept:
            pkt.drop()
            self.dropped += 1
            return
        if v.mark is not None:
            pkt.set_mark(v.mark)
        if rewritten:
            pkt.set_payload(bytes(v.payload or b""))
            self.modified += 1
        pkt.accept()
        self.accepted += 1

    def counters(self) -> dict[str, int | None]:
        return {
            "packets": self.packets,
            "accepted": self.accepted,
            "dropped": self.dropped,
            "modified": self.modified,
            "batches": self.batches,
            "enobufs": self.enobufs,
            "backend_errors": self.errors,
            "rcvbuf": self.rcvbuf,
        }

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._nfq is not None:
            with contextlib.suppress(Exception):
                self._nfq.unbind()
            self._nfq = None
