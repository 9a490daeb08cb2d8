"""The seam between the engine daemon and the kernel's packet queue.

A backend binds one NFQUEUE in the namespace its process runs in, hands over what has arrived as
a batch of `QueuedPacket`s, and takes one `Verdict` per packet back. Batches exist so that the
caller pays its fixed costs (the engine lock, the clock, the kernel round trip) once per batch
instead of once per packet; a backend that cannot batch returns batches of what it has.

Two backends (`fw.lab.nfqueue.open_backend` picks one by name):
- `netlink` (fw/lab/queue_netlink.py): a raw NETLINK_NETFILTER socket; GSO packets (up to 64 KiB
  of a TCP stream in one queued packet), batched verdicts for runs of accepted packets;
- `netfilterqueue` (fw/lab/queue_nfq.py): the `netfilterqueue` package (libnetfilter_queue):
  one packet per read, one verdict per packet, segments only.

`serve()` is the loop that drives either one: wait at most `timeout()` seconds (the engine's next
expiry, say), judge the batch, answer it. A judge that raises or miscounts drops the whole batch:
the queue fails closed, never open.
"""

from __future__ import annotations

import select
import socket
import threading
import time
from collections.abc import Callable, Sequence
from typing import NamedTuple, Protocol

__all__ = [
    "ACCEPT",
    "DROP",
    "HOOK_NAMES",
    "SKB_CSUM_NOT_READY",
    "SKB_CSUM_NOT_VERIFIED",
    "SKB_GSO",
    "BatchJudge",
    "Handler",
    "IfNames",
    "JudgeErrors",
    "QueueBackend",
    "QueuedPacket",
    "Verdict",
    "ip_protocol",
    "judge_each",
    "serve",
]

HOOK_NAMES = {0: "prerouting", 1: "input", 2: "forward", 3: "output", 4: "postrouting"}

# NFQA_SKB_INFO bits (linux/netfilter/nfnetlink_queue.h)
SKB_CSUM_NOT_READY = 1  # CHECKSUM_PARTIAL: the transport checksum holds only the pseudo header
SKB_GSO = 2  # a GSO packet: longer than the MTU, the kernel segments it later
SKB_CSUM_NOT_VERIFIED = 4  # nobody has checked the checksum yet


class QueuedPacket(NamedTuple):
    """One packet waiting in the kernel for its verdict."""

    id: int  # the kernel's packet id (per queue, increasing)
    hook: str  # "prerouting" | "input" | "forward" | "output" | "postrouting"
    iif: str | None  # interface names in the backend's namespace; None when there is none
    oif: str | None
    payload: bytes  # the IP packet (a GSO packet may be up to 64 KiB)
    skb_info: int = 0  # SKB_* bits
    mark: int = 0
    length: int = -1  # the packet's length in the kernel when the copy was cut short, else -1

    @property
    def truncated(self) -> bool:
        return self.length > len(self.payload)

    @property
    def wire_len(self) -> int | None:
        """The packet's whole length when the copy was cut short (decode's `wire_len`)."""
        return self.length if self.length > len(self.payload) else None


def ip_protocol(payload: bytes) -> int | None:
    """The protocol after a queued packet's IP header, read without decoding it (IPv6: the
    first next header, so no extension headers: what NAT, IPv4 only, and the tests need)."""
    if not payload:
        return None
    version = payload[0] >> 4
    if version == 4 and len(payload) >= 20:
        return payload[9]
    if version == 6 and len(payload) >= 40:
        return payload[6]
    return None


class Verdict(NamedTuple):
    """Accept (with new bytes, a new mark) or drop."""

    accept: bool
    payload: bytes | None = None  # the rewritten packet; None keeps the kernel's own
    mark: int | None = None
    forwarded: bool = False  # it leaves through a device (the forward chain), not to a socket


ACCEPT = Verdict(True)
DROP = Verdict(False)

BatchJudge = Callable[[Sequence[QueuedPacket]], Sequence[Verdict]]
# the per-packet form: (payload, hook, now, iif, oif) -> ("accept" | "drop", new bytes or None)
Handler = Callable[[bytes, str, float, "str | None", "str | None"], tuple[str, "bytes | None"]]


class QueueBackend(Protocol):
    """What the daemon needs from a kernel queue."""

    name: str
    queue_num: int
    rcvbuf: int | None  # SO_RCVBUF as the kernel reports it after bind()

    def fileno(self) -> int:
        """The socket to wait on (-1 when not bound)."""

    def bind(self) -> None:
        """Bind the queue in this process's namespace (an error when another listener has it)."""

    def receive(self, timeout: float | None) -> list[QueuedPacket]:
        """Wait at most `timeout` seconds for packets, then return what has arrived (maybe [])."""

    def answer(self, packets: Sequence[QueuedPacket], verdicts: Sequence[Verdict]) -> None:
        """One verdict per packet of the last batch, in the same order."""

    def set_copy_range(self, size: int) -> None:
        """Copy at most `size` bytes of each packet from now on, where the backend can (a
        packet cut short arrives with its whole `length`); others keep copying whole packets."""

    def counters(self) -> dict[str, int | None]:
        """Packets, verdicts and the backend's own trouble counters (for `status`)."""

    def close(self) -> None:
        """Unbind: the kernel drops what still waits (fail closed)."""


class IfNames:
    """Interface index -> the name the rules use, in this process's namespace, refreshed on an
    unknown index (an interface may appear after the backend started).

    The name is the device's own unless `aliases` renames it: an attachment (`fwlab attach
    --iface lan=eth1`) runs rules that say `iif lan` in front of a namespace whose device is
    eth1, so {"eth1": "lan"} here makes every packet from eth1 arrive as coming from `lan`."""

    def __init__(self, aliases: dict[str, str] | None = None) -> None:
        self._names: dict[int, str] = {}
        self._aliases = dict(aliases or {})

    def __call__(self, index: int) -> str | None:
        if not index:
            return None
        name = self._names.get(index)
        if name is None:
            self._names = {i: self._aliases.get(n, n) for i, n in socket.if_nameindex()}
            name = self._names.setdefault(index, f"if{index}")
        return name


# -- driving a backend -----------------------------------------------------------------------


class JudgeErrors:
    """What went wrong in judges: counted, the last one kept (for `status` and the log)."""

    def __init__(self) -> None:
        self.count = 0
        self.last: BaseException | None = None

    def note(self, exc: BaseException) -> None:
        self.count += 1
        self.last = exc


def judge_each(
    handler: Handler, errors: JudgeErrors | None = None, clock: Callable[[], float] = time.monotonic
) -> BatchJudge:
    """A batch judge from a per-packet handler (the clock read once per batch); a packet whose
    handler raises or answers something else than accept/drop is dropped (counted in `errors`)."""

    def judge(packets: Sequence[QueuedPacket]) -> list[Verdict]:
        out = []
        now = clock()
        for p in packets:
            try:
                verdict, new = handler(p.payload, p.hook, now, p.iif, p.oif)
                if verdict not in ("accept", "drop"):
                    raise ValueError(f"handler returned verdict {verdict!r}")
                out.append(DROP if verdict == "drop" else Verdict(True, new) if new else ACCEPT)
            except Exception as exc:
                if errors is not None:
                    errors.note(exc)
                out.append(DROP)
        return out

    return judge


def judge_batch(
    judge: BatchJudge, packets: Sequence[QueuedPacket], errors: JudgeErrors
) -> Sequence[Verdict]:
    """The judge's verdicts, or DROP for every packet when it raises or miscounts."""
    try:
        verdicts = judge(packets)
        if len(verdicts) != len(packets):
            raise ValueError(f"{len(verdicts)} verdicts for {len(packets)} packets")
        return verdicts
    except BaseException as exc:
        errors.note(exc)
        return [DROP] * len(packets)


def _answer(
    backend: QueueBackend, packets: list[QueuedPacket], judge: BatchJudge, errors: JudgeErrors
) -> None:
    """Judge and answer one batch; a KeyboardInterrupt/SystemExit raised by the judge goes on
    after the batch has been answered (dropped)."""
    if not packets:
        return
    before = errors.last
    backend.answer(packets, judge_batch(judge, packets, errors))
    if errors.last is not before and not isinstance(errors.last, Exception):
        raise errors.last  # type: ignore[misc]


def serve(
    backend: QueueBackend,
    judge: BatchJudge,
    *,
    stop: threading.Event,
    timeout: Callable[[], float] = lambda: 0.2,
    errors: JudgeErrors | None = None,
    openers: QueueBackend | None = None,
) -> None:
    """Receive, judge, answer until `stop` is set. With `openers` (the queue of packets that can
    only open connections), wait on both queues and read one openers batch (its backend's
    max_batch, small) after each batch of the main queue: a flood of openers fills its own queue
    while established flows keep theirs moving."""
    errors = errors if errors is not None else JudgeErrors()
    if openers is None:
        while not stop.is_set():
            _answer(backend, backend.receive(timeout()), judge, errors)
        return
    both = select.poll()
    main_fd, openers_fd = backend.fileno(), openers.fileno()
    for fd in (main_fd, openers_fd):
        both.register(fd, select.POLLIN)
    ready = {main_fd, openers_fd}  # the first round reads both: a backend may hold packets
    while not stop.is_set():
        if main_fd in ready:
            _answer(backend, backend.receive(0), judge, errors)
        if openers_fd in ready:  # (an idle queue costs no read that fails, nearly always)
            _answer(openers, openers.receive(0), judge, errors)
        ready = {fd for fd, _ in both.poll(timeout() * 1000)}
