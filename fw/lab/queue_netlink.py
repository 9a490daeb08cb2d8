"""NFQUEUE over a raw netlink socket: GSO packets in, batched verdicts out (`--backend netlink`).

Why a hand-written client: measured on the project machine (issue 13), a pure-Python consumer on
a raw NETLINK_NETFILTER socket that asks for GSO packets and answers runs of packets with one
batched verdict forwarded about 0.75 x the kernel's TCP rate, while netfilterqueue (no GSO, one
verdict per packet, 4 KiB reads) tops out near 0.1 x. No maintained library does both: the
`netfilterqueue` package has neither GSO nor batches, `fnfqueue` measured slower, and pyroute2
(already a dependency) knows the subsystem number but not the queue's messages. The protocol is
small (linux/netfilter/nfnetlink_queue.h) and fixed, so `struct` it is.

What it does, and why:
- config, one message (so the queue never runs half-configured): bind, copy whole packets
  (range 65531, the most a netlink attribute holds, so a 64 KiB GSO packet arrives whole),
  `max_len` packets may wait, flags NFQA_CFG_F_GSO (the kernel does not segment TCP super-packets
  before queueing them: one queued packet instead of up to 44) and NFQA_CFG_F_FAIL_OPEN when
  asked (a full queue or a full socket accepts instead of dropping);
- a large receive buffer (SO_RCVBUFFORCE) and batches: every queued packet is one datagram
  (Python has no recvmmsg), so a batch is what non-blocking reads find, up to `max_batch`;
- ENOBUFS (the socket overflowed; the kernel counted and dropped those packets, or accepted
  them under fail-open) is counted and survived: the packets it lost were never queued, so no
  verdict is owed for them;
- verdicts in packet order, all in one sendmsg: a run of plain accepts is one
  NFQNL_MSG_VERDICT_BATCH (it accepts every waiting packet up to an id, and every one of those
  was received and judged), a rewritten, re-marked or dropped packet gets its own
  NFQNL_MSG_VERDICT; errors the kernel reports for them are counted;
- NFQA_SKB_INFO: with GSO on, the kernel no longer finishes checksums before queueing, so a TCP
  or UDP packet flagged CSUMNOTREADY holds only the pseudo-header sum in its checksum field
  (CHECKSUM_PARTIAL). A packet given back with new bytes loses that state in the kernel
  (nfqnl_mangle sets CHECKSUM_NONE), so its transport checksum must then be complete: the
  backend computes it in full before answering (`complete_checksum`), except for a TCP GSO
  packet that is forwarded: the kernel segments that one in software on its way out
  (CHECKSUM_NONE is no GSO a device may take) and tcp4_gso_segment writes every segment's
  checksum, whatever the field held; summing 64 KiB for it was a fifth of the masquerade path's
  time. A GSO packet delivered to the firewall itself is checked whole: completed
  (docs/lab-notes.md);
- the copy range: whole packets while the engine may rewrite one, else the first 2 KiB (the
  daemon sets it, `set_copy_range`): the engine judges headers, and a 64 KiB copy per GSO packet
  was the TCP path's largest cost.
"""

from __future__ import annotations

import errno
import os
import select
import socket
import struct
from collections.abc import Sequence

from fw.core.protocols import TCP, UDP

try:  # optional: the `lab` extra brings it; without it rewritten GSO packets cost more
    import numpy as _np
except ImportError:  # pragma: no cover
    _np = None
from fw.errors import LabError
from fw.lab.queue_backend import (
    HOOK_NAMES,
    SKB_CSUM_NOT_READY,
    SKB_GSO,
    IfNames,
    QueuedPacket,
    Verdict,
    ip_protocol,
)

__all__ = [
    "NetlinkBackend",
    "complete_checksum",
    "config_message",
    "copy_range_message",
    "parse_datagram",
    "verdict_messages",
]

NETLINK_NETFILTER = 12
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
SO_SNDBUFFORCE = getattr(socket, "SO_SNDBUFFORCE", 32)

# netlink
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NLMSG_ERROR, NLMSG_OVERRUN = 2, 4
NLMSG_MIN_TYPE = 0x10
NLA_TYPE_MASK = 0x3FFF  # without NLA_F_NESTED / NLA_F_NET_BYTEORDER

# nfnetlink_queue
SUBSYS_QUEUE = 3
MSG_PACKET, MSG_VERDICT, MSG_CONFIG, MSG_VERDICT_BATCH = (SUBSYS_QUEUE << 8 | m for m in range(4))
NFQA_PACKET_HDR, NFQA_VERDICT_HDR, NFQA_MARK = 1, 2, 3
NFQA_IFINDEX_INDEV, NFQA_IFINDEX_OUTDEV = 5, 6
NFQA_PAYLOAD, NFQA_CAP_LEN, NFQA_SKB_INFO = 10, 13, 14
NFQA_CFG_CMD, NFQA_CFG_PARAMS, NFQA_CFG_QUEUE_MAXLEN, NFQA_CFG_MASK, NFQA_CFG_FLAGS = 1, 2, 3, 4, 5
CMD_BIND, CMD_UNBIND = 1, 2
COPY_PACKET = 2
CFG_F_FAIL_OPEN, CFG_F_GSO = 0x1, 0x4
NF_DROP, NF_ACCEPT = 0, 1
MAX_COPY_RANGE = 0xFFFF - 4  # NFQNL_MAX_COPY_RANGE: an attribute's length is 16 bits

_NLMSG = struct.Struct("=IHHII")  # len type flags seq pid (host order)
_NFGEN = struct.Struct("!BBH")  # family version res_id (res_id in network order)
_NLA = struct.Struct("=HH")  # len type (host order)
_PKT_HDR = struct.Struct("!IHB")  # packet_id hw_protocol hook
_BE32 = struct.Struct("!I")
_ERR = struct.Struct("=i")
# a verdict message up to its payload: nlmsghdr, nfgenmsg, NFQA_VERDICT_HDR
_VERDICT = struct.Struct("=IHHII BBH HH II")
_MARK_ATTR = struct.Struct("=HHI")  # len type value(network order: packed by hand)
_HDR_LEN = _NLMSG.size + _NFGEN.size

DEFAULT_RCVBUF = 64 * 1024 * 1024  # bytes requested; the kernel reports (and grants) twice that
DEFAULT_SNDBUF = 8 * 1024 * 1024
DEFAULT_MAX_LEN = 8192
MAX_BATCH = 128
SEND_CHUNK = 1 << 20  # bytes of verdicts per sendmsg (the socket's send buffer bounds one)
_CSUM_AT = {TCP: 16, UDP: 6}  # the checksum field's offset in the transport header
_new = tuple.__new__  # a NamedTuple without its Python-level __new__: 2 us less per packet


def _align(n: int) -> int:
    return (n + 3) & ~3


def _pad(n: int) -> bytes:
    return b"\0" * (_align(n) - n)


# -- encoding ---------------------------------------------------------------------------------


def _attr(kind: int, data: bytes) -> bytes:
    return _NLA.pack(4 + len(data), kind) + data + _pad(len(data))


def _config(queue_num: int, attrs: Sequence[bytes], seq: int, ack: bool = True) -> bytes:
    """One NFQNL_MSG_CONFIG for `queue_num` carrying `attrs` (acknowledged unless `ack` is off)."""
    body = _NFGEN.pack(socket.AF_UNSPEC, 0, queue_num) + b"".join(attrs)
    flags = NLM_F_REQUEST | (NLM_F_ACK if ack else 0)
    return _NLMSG.pack(_NLMSG.size + len(body), MSG_CONFIG, flags, seq, 0) + body


def _command(cmd: int) -> bytes:
    return _attr(NFQA_CFG_CMD, struct.pack("!BBH", cmd, 0, socket.AF_UNSPEC))


def _params(copy_range: int) -> bytes:
    return _attr(NFQA_CFG_PARAMS, struct.pack("!IB", copy_range, COPY_PACKET))


def config_message(
    queue_num: int,
    *,
    seq: int = 1,
    max_len: int = DEFAULT_MAX_LEN,
    copy_range: int = MAX_COPY_RANGE,
    gso: bool = True,
    fail_open: bool = False,
) -> bytes:
    """Bind `queue_num` and configure it, in one message the kernel acknowledges."""
    flags = (CFG_F_GSO if gso else 0) | (CFG_F_FAIL_OPEN if fail_open else 0)
    return _config(queue_num, [
        _command(CMD_BIND),
        _params(copy_range),
        _attr(NFQA_CFG_QUEUE_MAXLEN, _BE32.pack(max_len)),
        _attr(NFQA_CFG_MASK, _BE32.pack(CFG_F_GSO | CFG_F_FAIL_OPEN)),
        _attr(NFQA_CFG_FLAGS, _BE32.pack(flags)),
    ], seq)


def copy_range_message(queue_num: int, copy_range: int, seq: int = 0) -> bytes:
    """Copy at most `copy_range` bytes of each packet from now on (the queue stays bound)."""
    return _config(queue_num, [_params(copy_range)], seq)


def unbind_message(queue_num: int, seq: int = 0) -> bytes:
    return _config(queue_num, [_command(CMD_UNBIND)], seq, ack=False)


def _verdict_head(kind: int, queue_num: int, packet_id: int, accept: bool, extra: int) -> bytes:
    """A verdict message's fixed part; `extra` bytes (mark, payload attributes) follow."""
    return _VERDICT.pack(
        _VERDICT.size + extra,
        kind,
        NLM_F_REQUEST,
        0,
        0,
        socket.AF_UNSPEC,
        0,
        socket.htons(queue_num),
        12,
        NFQA_VERDICT_HDR,
        socket.htonl(NF_ACCEPT if accept else NF_DROP),
        socket.htonl(packet_id),
    )


def _verdict_parts(queue_num: int, packet_id: int, verdict: Verdict, batch: bool) -> list[bytes]:
    """The buffers of one verdict message (header, mark, payload attribute, payload, padding)."""
    tail: list[bytes] = []
    if verdict.mark is not None:
        tail.append(_MARK_ATTR.pack(8, NFQA_MARK, socket.htonl(verdict.mark)))
    if verdict.payload is not None and not batch:
        n = len(verdict.payload)
        tail += [_NLA.pack(4 + n, NFQA_PAYLOAD), verdict.payload, _pad(n)]
    kind = MSG_VERDICT_BATCH if batch else MSG_VERDICT
    head = _verdict_head(kind, queue_num, packet_id, verdict.accept, sum(map(len, tail)))
    return [head, *tail]


def verdict_messages(
    queue_num: int, packets: Sequence[QueuedPacket], verdicts: Sequence[Verdict],
    mark: int | None = None,
) -> list[list[bytes]]:
    """The messages (each a list of buffers) answering `packets` in order: a run of plain
    accepts is one batch verdict up to its last id, anything else one verdict of its own.
    `mark`: the mark every verdict without one of its own sets (a batch verdict carries it
    for every packet it accepts)."""
    messages: list[list[bytes]] = []
    run_end = -1
    every = ACCEPT_ALL if mark is None else Verdict(True, None, mark)
    for p, v in zip(packets, verdicts, strict=True):
        if v.accept and v.payload is None and v.mark is None:
            run_end = p.id
            continue
        if run_end >= 0:
            messages.append(_verdict_parts(queue_num, run_end, every, batch=True))
            run_end = -1
        if v.mark is None and mark is not None:
            v = v._replace(mark=mark)
        messages.append(_verdict_parts(queue_num, p.id, v, batch=False))
    if run_end >= 0:
        messages.append(_verdict_parts(queue_num, run_end, every, batch=True))
    return messages


ACCEPT_ALL = Verdict(True)


# -- decoding ---------------------------------------------------------------------------------


def _packet(
    buf: bytes | bytearray | memoryview, start: int, end: int, ifname: IfNames
) -> QueuedPacket | None:
    """One NFQNL_MSG_PACKET's attributes -> QueuedPacket (None without a header or payload).
    One flat loop: this runs for every packet, and a generator per message cost half again."""
    pid = hook = -1
    indev = outdev = skb_info = mark = 0
    cap_len = -1
    payload = None
    nla, be32 = _NLA.unpack_from, _BE32.unpack_from
    while start + 4 <= end:
        alen, kind = nla(buf, start)
        if alen < 4 or start + alen > end:
            break
        kind &= NLA_TYPE_MASK
        data = start + 4
        if kind == NFQA_PACKET_HDR:
            pid, _, hook = _PKT_HDR.unpack_from(buf, data)
        elif kind == NFQA_PAYLOAD:
            payload = bytes(buf[data : start + alen])
        elif kind == NFQA_IFINDEX_INDEV:
            indev = be32(buf, data)[0]
        elif kind == NFQA_IFINDEX_OUTDEV:
            outdev = be32(buf, data)[0]
        elif kind == NFQA_SKB_INFO:
            skb_info = be32(buf, data)[0]
        elif kind == NFQA_MARK:
            mark = be32(buf, data)[0]
        elif kind == NFQA_CAP_LEN:
            cap_len = be32(buf, data)[0]
        start += (alen + 3) & ~3
    if pid < 0 or payload is None:
        return None
    hook_name = HOOK_NAMES.get(hook) or str(hook)
    iif = ifname(indev) if indev else None
    oif = ifname(outdev) if outdev else None
    return _new(QueuedPacket, (pid, hook_name, iif, oif, payload, skb_info, mark, cap_len))


def parse_datagram(
    buf: bytes | bytearray | memoryview, size: int, ifname: IfNames
) -> tuple[list[QueuedPacket], list[tuple[int, int]]]:
    """The packets in buf[:size], and the (errno, seq) of each error report (errno 0: an ack)."""
    packets: list[QueuedPacket] = []
    errors: list[tuple[int, int]] = []
    off = 0
    while off + _NLMSG.size <= size:
        mlen, kind, _flags, seq, _pid = _NLMSG.unpack_from(buf, off)
        if mlen < _NLMSG.size or off + mlen > size:
            break
        if kind == MSG_PACKET:
            pkt = _packet(buf, off + _HDR_LEN, off + mlen, ifname)
            if pkt is not None:
                packets.append(pkt)
        elif kind == NLMSG_ERROR and mlen >= _NLMSG.size + 4:
            errors.append((-_ERR.unpack_from(buf, off + _NLMSG.size)[0], seq))
        off += (mlen + 3) & ~3
    return packets, errors


# -- checksums of rewritten packets -----------------------------------------------------------


def _ones_sum(buf: bytes | bytearray, start: int, end: int) -> int:
    """A number congruent (mod 0xffff) to the one's complement sum of buf[start:end]'s 16-bit
    words (an odd length padded with a zero byte). numpy, when there, sums a 64 KiB GSO packet
    in about 15 us, as native 32-bit words (since 2**16 = 1 mod 0xffff, their sum is the sum of
    the little-endian 16-bit words, and times 2**8 that of the big-endian ones: RFC 1071's byte
    order independence); as big-endian 16-bit words it took 27 us, Python's big integers
    (int.from_bytes, then %) about 150."""
    size = end - start
    if _np is None or size < 4096:
        return _tail_sum(buf, start, end)
    words = size >> 2
    total = int(_np.frombuffer(buf, "<u4", words, start).sum(dtype=_np.uint64)) << 8
    return total + _tail_sum(buf, start + (words << 2), end)


def _tail_sum(buf: bytes | bytearray, start: int, end: int) -> int:
    n = int.from_bytes(buf[start:end])
    return n << 8 if (end - start) & 1 else n


def complete_checksum(packet: bytes) -> bytes:
    """`packet` with its TCP/UDP checksum computed in full (it held only the pseudo-header sum:
    CSUMNOTREADY). Anything else (a fragment, no transport header) is returned as it is. The
    sum is taken with the old field in and that field taken out again, so the packet is copied
    once, with the new field, not first to zero it."""
    from fw.engine.checksum import pseudo_header_sum
    from fw.engine.packet import decode

    pkt = decode(packet)
    at = _CSUM_AT.get(pkt.proto)
    if at is None or pkt.invalid or pkt.l4_offset < 0 or pkt.is_fragment:
        return packet
    field = pkt.l4_offset + at
    seed = pseudo_header_sum(pkt.family, pkt.src, pkt.dst, pkt.proto, pkt.length - pkt.l4_offset)
    old = int.from_bytes(packet[field : field + 2])
    total = seed + _ones_sum(packet, pkt.l4_offset, pkt.length) - old
    csum = ~(total % 0xFFFF or 0xFFFF) & 0xFFFF  # the pseudo header is never all zero
    if csum == 0 and pkt.proto == UDP:
        csum = 0xFFFF  # UDP's 0 means "no checksum"
    view = memoryview(packet)
    return b"".join((view[:field], csum.to_bytes(2), view[field + 2 :]))


def _set_buffer(sock: socket.socket, force: int, plain: int, size: int) -> None:
    """The forced size (root: not capped by net.core.[rw]mem_max), else what the cap allows."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, force, size)
    except PermissionError:
        sock.setsockopt(socket.SOL_SOCKET, plain, size)


# -- the backend ------------------------------------------------------------------------------


class NetlinkBackend:
    """One NFQUEUE bound on a raw netlink socket in this process's namespace."""

    name = "netlink"

    def __init__(
        self,
        queue_num: int = 0,
        *,
        fail_open: bool = False,
        gso: bool = True,
        max_len: int = DEFAULT_MAX_LEN,
        rcvbuf: int = DEFAULT_RCVBUF,
        max_batch: int = MAX_BATCH,
        ifnames: IfNames | None = None,
        reset_mark: bool = False,
        copy_range: int = MAX_COPY_RANGE,
    ) -> None:
        self.queue_num, self.fail_open, self.gso = queue_num, fail_open, gso
        self.copy_range = copy_range
        self.mark = 0 if reset_mark else None  # what every verdict sets the mark to
        self.max_len, self.requested_rcvbuf, self.max_batch = max_len, rcvbuf, max_batch
        self.rcvbuf: int | None = None
        self.packets = self.accepted = self.dropped = self.modified = 0
        self.batches = self.messages = self.enobufs = self.kernel_errors = 0
        self.gso_packets = self.csum_completed = self.csum_left = 0
        self.truncated = self.cut_rewrites = 0
        self.last_kernel_error: str | None = None
        self._sock: socket.socket | None = None
        self._poll = select.poll()
        self._buf = bytearray(1 << 17)  # more than the largest message (65531 + attributes)
        self._view = memoryview(self._buf)
        self._pending: list[QueuedPacket] = []
        self._ifname = ifnames or IfNames()

    def fileno(self) -> int:
        return self._sock.fileno() if self._sock is not None else -1

    def bind(self) -> None:
        """Open the socket, size its buffers, bind and configure the queue (acknowledged)."""
        sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
        try:
            sock.bind((0, 0))
            sock.connect((0, 0))  # the kernel
            _set_buffer(sock, SO_RCVBUFFORCE, socket.SO_RCVBUF, self.requested_rcvbuf)
            _set_buffer(sock, SO_SNDBUFFORCE, socket.SO_SNDBUF, DEFAULT_SNDBUF)
            self.rcvbuf = sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
            msg = config_message(
                self.queue_num, max_len=self.max_len, gso=self.gso, fail_open=self.fail_open,
                copy_range=self.copy_range,
            )
            sock.settimeout(5)
            sock.send(msg)
            self._await_ack(sock, seq=1)
            sock.setblocking(False)
        except BaseException:
            sock.close()
            raise
        self._sock = sock
        self._poll.register(sock.fileno(), select.POLLIN)

    def set_copy_range(self, size: int) -> None:
        """Copy at most `size` bytes of each packet from now on (whole packets: MAX_COPY_RANGE).
        Packets already queued keep the copy they had; the kernel's answer comes with the next
        packets (an error is counted there)."""
        size = min(size, MAX_COPY_RANGE)
        if size == self.copy_range:
            return
        self.copy_range = size
        if self._sock is not None:
            self._sendmsg(self._sock, [copy_range_message(self.queue_num, size)])

    def _await_ack(self, sock: socket.socket, seq: int) -> None:
        """Read until the kernel acknowledges message `seq`; packets read meanwhile are kept."""
        while True:
            n = sock.recv_into(self._buf)
            packets, errors = parse_datagram(self._view, n, self._ifname)
            self._pending += packets
            for err, s in errors:
                if s != seq:
                    continue
                if err in (errno.EPERM, errno.EBUSY):
                    raise LabError(f"NFQUEUE {self.queue_num} is bound by another listener")
                if err:
                    raise LabError(f"binding NFQUEUE {self.queue_num}: {os.strerror(err)}")
                return

    def receive(self, timeout: float | None) -> list[QueuedPacket]:
        """What has arrived within `timeout` seconds, up to max_batch packets."""
        sock = self._sock
        if sock is None:
            raise LabError("the queue is not bound")
        out, self._pending = self._pending, []
        if not out and timeout != 0 and not self._poll.poll(
            None if timeout is None else max(0, timeout) * 1000
        ):
            return out  # (timeout 0: the first read below finds out as cheaply as a poll)
        buf, view, ifname = self._buf, self._view, self._ifname
        while len(out) < self.max_batch:
            try:
                n = sock.recv_into(buf)
            except BlockingIOError:
                break
            except OSError as exc:
                if exc.errno != errno.ENOBUFS:
                    raise
                self.enobufs += 1  # the kernel dropped what did not fit; it owes us nothing
                continue
            packets, errors = parse_datagram(view, n, ifname)
            out += packets
            for err, _ in errors:
                if err:
                    self.kernel_errors += 1
                    self.last_kernel_error = os.strerror(err)
        self._count_in(out)
        return out

    def _count_in(self, packets: list[QueuedPacket]) -> None:
        if packets:
            self.batches += 1
            self.packets += len(packets)
            for p in packets:
                if p.skb_info & SKB_GSO:
                    self.gso_packets += 1
                if p.length > len(p.payload):
                    self.truncated += 1

    def answer(self, packets: Sequence[QueuedPacket], verdicts: Sequence[Verdict]) -> None:
        """Give the kernel one verdict per packet (rewritten checksums completed first)."""
        verdicts = [self._prepare(p, v) for p, v in zip(packets, verdicts, strict=True)]
        self._send(verdict_messages(self.queue_num, packets, verdicts, self.mark))

    def _prepare(self, p: QueuedPacket, v: Verdict) -> Verdict:
        if not v.accept:
            self.dropped += 1
            return v
        if v.payload is None or v.payload == p.payload:
            self.accepted += 1
            return v if v.payload is None else v._replace(payload=None)
        if p.truncated:
            self.dropped += 1  # the bytes we have are cut short: giving them back would trim it
            self.cut_rewrites += 1
            return Verdict(False)
        self.accepted += 1
        self.modified += 1
        if not p.skb_info & SKB_CSUM_NOT_READY:
            return v
        if v.forwarded and p.skb_info & SKB_GSO and ip_protocol(v.payload) == TCP:
            self.csum_left += 1  # the kernel's segmentation writes it
            return v
        self.csum_completed += 1
        return v._replace(payload=complete_checksum(v.payload))

    def _send(self, messages: list[list[bytes]]) -> None:
        """Everything in as few sendmsg calls as the send buffer allows (whole messages each)."""
        sock = self._sock
        if sock is None:
            return
        chunk: list[bytes] = []
        size = 0
        for parts in messages:
            if size >= SEND_CHUNK:
                self._sendmsg(sock, chunk)
                chunk, size = [], 0
            chunk += parts
            size += sum(map(len, parts))
        if chunk:
            self._sendmsg(sock, chunk)
        self.messages += len(messages)

    def _sendmsg(self, sock: socket.socket, chunk: list[bytes]) -> None:
        try:
            sock.sendmsg(chunk)
        except OSError as exc:  # the packets stay queued until the socket closes: then dropped
            self.kernel_errors += 1
            self.last_kernel_error = f"sendmsg: {exc.strerror or exc}"

    def counters(self) -> dict[str, int | None]:
        return {
            "packets": self.packets,
            "accepted": self.accepted,
            "dropped": self.dropped,
            "modified": self.modified,
            "batches": self.batches,
            "verdict_messages": self.messages,
            "enobufs": self.enobufs,
            "kernel_errors": self.kernel_errors,
            "gso_packets": self.gso_packets,
            "csum_completed": self.csum_completed,
            "csum_left_to_segmentation": self.csum_left,
            "truncated": self.truncated,
            "cut_rewrites": self.cut_rewrites,
            "copy_range": self.copy_range,
            "rcvbuf": self.rcvbuf,
        }

    def close(self) -> None:
        """Unbind and close; the kernel drops whatever still waits for a verdict."""
        sock, self._sock = self._sock, None
        if sock is None:
            return
        try:
            self._poll.unregister(sock.fileno())
            sock.send(unbind_message(self.queue_num))
        except OSError:
            pass
        sock.close()
