"""The firewall namespace's packet path: notrack + NFQUEUE rules, and the NFQUEUE adapter.

What this kernel can do (details, commands and errors in docs/lab-notes.md):
- nftables has no native `queue` expression here (CONFIG_NFT_QUEUE unset: `nft add rule ... queue
  num 0` fails with ENOENT), so the queue rules go through iptables-nft, whose `-j NFQUEUE` is an
  xt target run by nft_compat. `-j CT --notrack` works (iptables-nft turns it into nft's native
  `notrack`), and ip6tables-nft does the same for IPv6.
- The rules live in the `raw` table (priority -300, before anything else but defrag): first
  `CT --notrack`, then `NFQUEUE`, in PREROUTING (packets arriving, forwarded or local) and OUTPUT
  (packets the firewall namespace itself sends). The engine sees every packet before the kernel's
  routing decision, as docs/design.md requires for NAT.
- netfilterqueue's Packet carries `hook` (NF_INET_* number) and `indev`/`outdev` (ifindexes,
  0 when there is none), so one queue serves every hook; the adapter turns them into names.

The adapter hides netfilterqueue behind one call, so a faster backend can replace it:

    handler(payload: bytes, hook: str, now: float, iif: str | None, oif: str | None)
        -> (verdict: "accept" | "drop", new_payload: bytes | None)

`python -m fw.lab.nfqueue` is an accept-all consumer (optionally dropping a protocol and logging
packet metadata) used by the lab tests; run it inside the firewall namespace.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

__all__ = [
    "HOOK_NAMES",
    "Handler",
    "NfqueueAdapter",
    "QueueStats",
    "install_queue",
    "queue_rules",
    "queue_stats",
    "remove_queue",
    "unqueue_rules",
]

HOOK_NAMES = {0: "prerouting", 1: "input", 2: "forward", 3: "output", 4: "postrouting"}
IPTABLES = ("iptables-nft", "ip6tables-nft")  # explicit: the nft backend is what was verified
TABLE = "raw"
CHAINS = ("PREROUTING", "OUTPUT")
SO_RCVBUFFORCE = getattr(socket, "SO_RCVBUFFORCE", 33)
DEFAULT_RCVBUF = 16 * 1024 * 1024  # bytes requested; the kernel reports (and grants) twice that
DEFAULT_MAX_LEN = 4096  # packets the kernel holds for the queue before it drops (queue_dropped)

Verdict = str  # "accept" | "drop"
Handler = Callable[[bytes, str, float, "str | None", "str | None"], tuple[Verdict, "bytes | None"]]


# -- rules ------------------------------------------------------------------------------------


def _queue_target(queue_num: int, fail_open: bool, queues: int) -> list[str]:
    if not 0 <= queue_num <= 65535 or queues < 1 or queue_num + queues - 1 > 65535:
        raise ValueError(f"queue numbers {queue_num}..{queue_num + queues - 1} out of 0..65535")
    if queues == 1:
        target = ["-j", "NFQUEUE", "--queue-num", str(queue_num)]
    else:
        # the kernel hashes each packet to one queue of the range (symmetric on the address pair)
        target = ["-j", "NFQUEUE", "--queue-balance", f"{queue_num}:{queue_num + queues - 1}"]
    if fail_open:
        target.append("--queue-bypass")  # no listener bound: accept instead of drop
    return target


def _rules(op: str, queue_num: int, fail_open: bool, queues: int) -> list[list[str]]:
    target = _queue_target(queue_num, fail_open, queues)
    out = []
    for tool in IPTABLES:
        for chain in CHAINS:
            out.append([tool, "-t", TABLE, op, chain, "-j", "CT", "--notrack"])
            out.append([tool, "-t", TABLE, op, chain, *target])
    return out


def queue_rules(queue_num: int = 0, fail_open: bool = False, *, queues: int = 1) -> list[list[str]]:
    """The argv of the commands that switch conntrack off and queue every packet (IPv4 and IPv6,
    prerouting and output) to `queue_num` (or the range queue_num..queue_num+queues-1). Without
    `fail_open` a queue with no listener drops (fail closed); with it, it accepts."""
    return _rules("-A", queue_num, fail_open, queues)


def unqueue_rules(
    queue_num: int = 0, fail_open: bool = False, *, queues: int = 1
) -> list[list[str]]:
    """The argv of the commands that remove what queue_rules() installs (reverse order)."""
    return list(reversed(_rules("-D", queue_num, fail_open, queues)))


def _in_ns(ns: str | None, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv] if ns else list(argv)


def install_queue(
    ns: str, queue_num: int = 0, fail_open: bool = False, *, queues: int = 1
) -> list[list[str]]:
    """Install queue_rules() in namespace `ns` (the firewall's). All or nothing: on a failing
    command, the rules already installed are removed and RuntimeError names the command and its
    error. Returns the removal commands (unqueue_rules())."""
    if not ns:
        raise ValueError("install_queue needs a namespace: it never touches the root namespace")
    done: list[list[str]] = []
    for argv in queue_rules(queue_num, fail_open, queues=queues):
        res = subprocess.run(_in_ns(ns, argv), capture_output=True, text=True, timeout=10)
        if res.returncode != 0:
            for undo in reversed(done):
                undo = [("-D" if a == "-A" else a) for a in undo]
                subprocess.run(_in_ns(ns, undo), capture_output=True, timeout=10)
            raise RuntimeError(f"{ns}: {' '.join(argv)}: {res.stderr.strip()}")
        done.append(argv)
    return unqueue_rules(queue_num, fail_open, queues=queues)


def remove_queue(ns: str, queue_num: int = 0, fail_open: bool = False, *, queues: int = 1) -> None:
    """Remove the rules install_queue() added (missing ones are ignored)."""
    if not ns:
        raise ValueError("remove_queue needs a namespace: it never touches the root namespace")
    for argv in unqueue_rules(queue_num, fail_open, queues=queues):
        subprocess.run(_in_ns(ns, argv), capture_output=True, timeout=10)


# -- counters ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueStats:
    """One line of /proc/net/netfilter/nfnetlink_queue (of the namespace that reads it)."""

    queue_num: int
    peer_portid: int  # netlink port id of the bound listener
    queue_total: int  # packets waiting for a verdict now
    copy_mode: int  # 2 = packet
    copy_range: int
    queue_dropped: int  # dropped because queue_total reached max_len
    user_dropped: int  # dropped because the listener's socket buffer was full (ENOBUFS)
    id_sequence: int  # packets queued so far (id of the last one)


def parse_queue_stats(text: str) -> list[QueueStats]:
    out = []
    for line in text.splitlines():
        f = line.split()
        if len(f) >= 8:
            out.append(QueueStats(*(int(x) for x in f[:8])))
    return out


def queue_stats(ns: str | None = None) -> list[QueueStats]:
    """The queues bound in namespace `ns` (None: the caller's own namespace). Only queues with a
    listener appear; an unbound queue has no line."""
    if ns is None:
        try:
            return parse_queue_stats(Path("/proc/net/netfilter/nfnetlink_queue").read_text())
        except FileNotFoundError:
            return []
    res = subprocess.run(
        _in_ns(ns, ["cat", "/proc/net/netfilter/nfnetlink_queue"]),
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    return parse_queue_stats(res.stdout)


# -- the adapter ------------------------------------------------------------------------------


class NfqueueAdapter:
    """Binds one queue (in the namespace this process runs in) and hands every packet to a
    handler. Backed by the `netfilterqueue` package; the handler never sees it.

    A handler exception drops the packet (fail closed) and is counted in `errors`; the last one is
    kept in `last_error`. Every packet gets exactly one verdict."""

    def __init__(
        self,
        queue_num: int = 0,
        *,
        max_len: int = DEFAULT_MAX_LEN,
        rcvbuf: int = DEFAULT_RCVBUF,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.queue_num = queue_num
        self.max_len = max_len
        self.requested_rcvbuf = rcvbuf
        self.rcvbuf: int | None = None  # SO_RCVBUF as the kernel reports it after bind()
        self.clock = clock
        self.packets = self.accepted = self.dropped = self.modified = self.errors = 0
        self.last_error: BaseException | None = None
        self._nfq = None
        self._sock: socket.socket | None = None
        self._ifnames: dict[int, str] = {}
        self._fatal: BaseException | None = None

    # interface names of the namespace the adapter runs in; refreshed on an unknown index
    def _ifname(self, index: int) -> str | None:
        if not index:
            return None
        name = self._ifnames.get(index)
        if name is None:
            self._ifnames = dict(socket.if_nameindex())
            name = self._ifnames.get(index)
            if name is None:
                name = f"if{index}"
        return name

    def callback(self, handler: Handler) -> Callable[[object], None]:
        """The per-packet function handed to the backend: packet -> handler -> one verdict."""

        def callback(pkt) -> None:  # type: ignore[no-untyped-def]
            verdict_given = False
            try:
                self.packets += 1
                payload = pkt.get_payload()
                hook = HOOK_NAMES.get(pkt.hook, str(pkt.hook))
                verdict, new_payload = handler(
                    payload, hook, self.clock(), self._ifname(pkt.indev), self._ifname(pkt.outdev)
                )
                if verdict == "accept":
                    if new_payload is not None and new_payload != payload:
                        pkt.set_payload(bytes(new_payload))
                        self.modified += 1
                    pkt.accept()
                    self.accepted += 1
                elif verdict == "drop":
                    pkt.drop()
                    self.dropped += 1
                else:
                    raise ValueError(f"handler returned verdict {verdict!r}")
                verdict_given = True
            except BaseException as exc:  # never let an exception into netfilterqueue's C loop
                self.errors += 1
                self.last_error = exc
                if not isinstance(exc, Exception):
                    self._fatal = exc  # KeyboardInterrupt/SystemExit: stop after this packet
            finally:
                if not verdict_given:
                    with contextlib.suppress(Exception):
                        pkt.drop()
                        self.dropped += 1

        return callback

    def bind(self, handler: Handler) -> None:
        """Bind the queue (in this process's namespace) and size its socket buffer."""
        from netfilterqueue import NetfilterQueue  # the only place the backend is named

        callback = self.callback(handler)
        nfq = NetfilterQueue()
        # sock_len is what netfilterqueue passes to nfnl_rcvbufsiz (SO_RCVBUFFORCE); it warns if
        # the kernel did not double it. We set it again ourselves and measure the result.
        nfq.bind(self.queue_num, callback, max_len=self.max_len, sock_len=self.requested_rcvbuf)
        self._nfq = nfq
        self._sock = socket.fromfd(nfq.get_fd(), socket.AF_NETLINK, socket.SOCK_RAW)  # a dup
        with contextlib.suppress(OSError):
            self._sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, self.requested_rcvbuf)
        self.rcvbuf = self._sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF)
        self._ifnames = dict(socket.if_nameindex())

    def run(
        self,
        handler: Handler | None = None,
        *,
        stop: threading.Event | None = None,
        poll: float = 0.2,
    ) -> None:
        """Bind (unless bind() was called) and hand packets to `handler` until `stop` is set, a
        KeyboardInterrupt/SystemExit arrives (also from inside the handler) or the socket fails.
        The queue is unbound on the way out."""
        if self._nfq is None:
            if handler is None:
                raise ValueError("run() needs a handler (or call bind(handler) first)")
            self.bind(handler)
        nfq = self._nfq
        assert nfq is not None
        fd = nfq.get_fd()
        try:
            while stop is None or not stop.is_set():
                ready, _, _ = select.select([fd], [], [], poll)
                if ready:
                    nfq.run(block=False)  # drains what is readable, then returns on EAGAIN
                if self._fatal is not None:
                    raise self._fatal
        finally:
            self.close()

    def stats(self) -> QueueStats | None:
        """This queue's kernel counters (read in the adapter's own namespace)."""
        for s in queue_stats(None):
            if s.queue_num == self.queue_num:
                return s
        return None

    def counters(self) -> dict[str, int | None]:
        return {
            "packets": self.packets,
            "accepted": self.accepted,
            "dropped": self.dropped,
            "modified": self.modified,
            "errors": self.errors,
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


# -- an accept-all consumer for the lab (python -m fw.lab.nfqueue) -----------------------------

_PROTOS = {"icmp": 1, "tcp": 6, "udp": 17, "icmpv6": 58}


def _protocol(payload: bytes) -> int | None:
    if not payload:
        return None
    version = payload[0] >> 4
    if version == 4 and len(payload) >= 20:
        return payload[9]
    if version == 6 and len(payload) >= 40:
        return payload[6]  # next header; good enough for the tests (no extension headers)
    return None


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m fw.lab.nfqueue",
        description="Accept-all NFQUEUE consumer for the lab (run inside the firewall namespace).",
    )
    ap.add_argument("--queue", type=int, default=0)
    ap.add_argument(
        "--drop",
        action="append",
        default=[],
        choices=sorted(_PROTOS),
        help="drop this protocol instead of accepting it (repeatable)",
    )
    ap.add_argument("--log", type=Path, help="write one JSON line of metadata per packet here")
    ap.add_argument("--log-max", type=int, default=1000, help="log at most this many packets")
    ap.add_argument("--rcvbuf", type=int, default=DEFAULT_RCVBUF)
    ap.add_argument("--max-len", type=int, default=DEFAULT_MAX_LEN)
    args = ap.parse_args(argv)

    drop = {_PROTOS[p] for p in args.drop}
    log = args.log.open("a", buffering=1) if args.log else None
    logged = 0

    def handler(payload: bytes, hook: str, now: float, iif: str | None, oif: str | None):
        nonlocal logged
        proto = _protocol(payload)
        verdict = "drop" if proto in drop else "accept"
        if log is not None and logged < args.log_max:
            logged += 1
            log.write(
                json.dumps(
                    {
                        "hook": hook,
                        "iif": iif,
                        "oif": oif,
                        "len": len(payload),
                        "version": payload[0] >> 4,
                        "proto": proto,
                        "verdict": verdict,
                        "now": now,
                    }
                )
                + "\n"
            )
        return verdict, None

    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    adapter = NfqueueAdapter(args.queue, max_len=args.max_len, rcvbuf=args.rcvbuf)
    adapter.bind(handler)
    st = adapter.stats()
    print(
        json.dumps(
            {
                "ready": True,
                "pid": os.getpid(),
                "queue": args.queue,
                "rcvbuf": adapter.rcvbuf,
                "requested_rcvbuf": args.rcvbuf,
                "kernel": asdict(st) if st else None,
            }
        ),
        flush=True,
    )
    try:
        adapter.run(stop=stop)
    finally:
        print(json.dumps({"done": True, **adapter.counters()}), flush=True)
        if log is not None:
            log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
