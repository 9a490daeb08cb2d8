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
- every queued packet carries its hook (NF_INET_* number) and its interfaces, so one queue
  serves every hook; the backends turn them into names.
- with `openers`, TCP SYNs without ACK go to a queue of their own (a SYN flood waits there, not
  in front of established packets), optionally behind a per-source hashlimit (docs/lab.md,
  "Floods").

The adapter drives a queue backend (fw/lab/queue_backend.py: `netlink` or `netfilterqueue`) with
one per-packet call:

    handler(payload: bytes, hook: str, now: float, iif: str | None, oif: str | None)
        -> (verdict: "accept" | "drop", new_payload: bytes | None)

`python -m fw.lab.nfqueue` is an accept-all consumer (optionally dropping a protocol, moving a
port, logging packet metadata) used by the lab tests and the benchmark; run it inside the
firewall namespace.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from fw.core.protocols import PORT_PROTOCOLS, PROTOCOLS
from fw.lab.queue_backend import (
    ACCEPT,
    DROP,
    HOOK_NAMES,
    BatchJudge,
    Handler,
    IfNames,
    JudgeErrors,
    QueueBackend,
    QueuedPacket,
    Verdict,
    ip_protocol,
    judge_each,
    serve,
)

__all__ = [
    "BACKENDS",
    "HOOK_NAMES",
    "Handler",
    "NfqueueAdapter",
    "QueueLayout",
    "QueueStats",
    "install_queue",
    "open_backend",
    "opener_limit_drops",
    "queue_rules",
    "queue_stats",
    "remove_queue",
    "unqueue_rules",
]

IPTABLES = ("iptables-nft", "ip6tables-nft")  # explicit: the nft backend is what was verified
TABLE = "raw"
CHAINS = ("PREROUTING", "OUTPUT")
OPENER_LIMIT_NAME = "fwlab-openers"  # the hashlimit table of opener_limit (per namespace)


# -- rules ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class QueueLayout:
    """Which queues the firewall namespace's packets go to: what the queue rules, the daemon
    and `down` must agree on, in one value (recorded in the lab's state as a dict).

    - `queue_num`: the main queue (of worker 0); `queues` > 1 spreads it with the kernel's
      --queue-balance instead (address hash only: the accept-all consumer's benchmark);
    - `fail_open`: a queue with no listener accepts (--queue-bypass) instead of dropping;
    - `openers`: the first queue of TCP connection openers (SYN without ACK), or None; worker
      *i*'s is openers + i. `opener_limit`: openers a second from one source before they are
      queued (None: no limit);
    - `workers`: engine processes. With more than one, an nft chain (fw/lab/steering.py) marks
      every packet with its worker + 1 first, and mark *m* goes to queue_num + m - 1."""

    queue_num: int = 0
    fail_open: bool = False
    queues: int = 1
    openers: int | None = None
    opener_limit: int | None = None
    workers: int = 1

    @classmethod
    def of(cls, recorded: dict[str, Any] | None) -> QueueLayout:
        """The layout a lab's state recorded (older states lack some fields)."""
        known = {k: v for k, v in (recorded or {}).items() if k in cls.__dataclass_fields__}
        return cls(**known)

    def main_queue(self, worker: int = 0) -> int:
        return self.queue_num + worker

    def openers_queue(self, worker: int = 0) -> int | None:
        return None if self.openers is None else self.openers + worker


def _queue_target(queue_num: int, fail_open: bool, queues: int = 1) -> list[str]:
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


def _opener_limit_rule(tool: str, chain: str, per_source: int | None) -> list[str] | None:
    """A TCP opener (SYN without ACK) beyond `per_source` a second from one source address (an
    IPv6 /64) is dropped here, before it is queued: a flood from one host cannot crowd out the
    openers of others in their shared queue. Only arriving packets (PREROUTING): the
    firewall's own are not limited. None: no limit."""
    if not per_source or chain != "PREROUTING":
        return None
    mask = ["--hashlimit-srcmask", "64"] if tool == "ip6tables-nft" else []
    return ["-p", "tcp", "--syn", "-m", "hashlimit", "--hashlimit-above", f"{per_source}/sec",
            "--hashlimit-burst", str(max(1, per_source // 4)), "--hashlimit-mode", "srcip", *mask,
            "--hashlimit-name", OPENER_LIMIT_NAME, "-j", "DROP"]


def _targets(layout: QueueLayout) -> list[list[str]]:
    """The queue rules of one chain after notrack and the limit: openers first, then the rest;
    with several workers one pair per worker's mark, and unmarked packets (the steering chain
    marks every packet; this is the safety net) to worker 0."""
    if layout.workers == 1:
        main = [_queue_target(layout.queue_num, layout.fail_open, layout.queues)]
        first = layout.openers_queue(0)
        syn = [] if first is None else [["-p", "tcp", "--syn",
                                         *_queue_target(first, layout.fail_open)]]
        return [*syn, *main]
    out = []
    for w in range(layout.workers):
        mark = ["-m", "mark", "--mark", str(w + 1)]
        if (opener := layout.openers_queue(w)) is not None:
            out.append(["-p", "tcp", "--syn", *mark, *_queue_target(opener, layout.fail_open)])
        out.append([*mark, *_queue_target(layout.main_queue(w), layout.fail_open)])
    return [*out, _queue_target(layout.queue_num, layout.fail_open)]


def _rules(op: str, layout: QueueLayout) -> list[list[str]]:
    targets = _targets(layout)
    out = []
    for tool in IPTABLES:
        for chain in CHAINS:
            out.append([tool, "-t", TABLE, op, chain, "-j", "CT", "--notrack"])
            limit = (_opener_limit_rule(tool, chain, layout.opener_limit)
                     if layout.openers is not None else None)
            if limit is not None:
                out.append([tool, "-t", TABLE, op, chain, *limit])
            out += [[tool, "-t", TABLE, op, chain, *target] for target in targets]
    return out


def queue_rules(layout: QueueLayout = QueueLayout()) -> list[list[str]]:
    """The argv of the commands that switch conntrack off and queue every packet (IPv4 and IPv6,
    prerouting and output) as `layout` says: TCP packets that can only open a connection (SYN
    without ACK) to the openers queue, so that a flood of them waits apart from established
    flows, those arriving beyond `opener_limit` a second from one source dropped before they
    are queued. Without `fail_open` a queue with no listener drops (fail closed); with it, it
    accepts."""
    return _rules("-A", layout)


def unqueue_rules(layout: QueueLayout = QueueLayout()) -> list[list[str]]:
    """The argv of the commands that remove what queue_rules() installs (reverse order)."""
    return list(reversed(_rules("-D", layout)))


def _in_ns(ns: str | None, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *argv] if ns else list(argv)


def install_queue(ns: str, layout: QueueLayout = QueueLayout(),
                  steering: str | None = None) -> list[list[str]]:
    """Install queue_rules() in namespace `ns` (the firewall's), after the steering chain
    (fw/lab/steering.py, an nft script) when there are several workers. All or nothing: on a
    failing command, what was installed is removed and RuntimeError names the command and its
    error. Returns the removal commands (unqueue_rules())."""
    if not ns:
        raise ValueError("install_queue needs a namespace: it never touches the root namespace")
    from fw.lab import steering as steer

    if layout.workers > 1:
        steer.install(ns, steering or "")
    done: list[list[str]] = []
    for argv in queue_rules(layout):
        res = subprocess.run(_in_ns(ns, argv), capture_output=True, text=True, timeout=10)
        if res.returncode != 0:
            for undo in reversed(done):
                undo = [("-D" if a == "-A" else a) for a in undo]
                subprocess.run(_in_ns(ns, undo), capture_output=True, timeout=10)
            if layout.workers > 1:
                steer.remove(ns)
            raise RuntimeError(f"{ns}: {' '.join(argv)}: {res.stderr.strip()}")
        done.append(argv)
    return unqueue_rules(layout)


def remove_queue(ns: str, layout: QueueLayout = QueueLayout()) -> None:
    """Remove the rules install_queue() added (missing ones are ignored), the queue rules
    first: until the last is gone, a packet finds no listener and is dropped (fail closed)."""
    if not ns:
        raise ValueError("remove_queue needs a namespace: it never touches the root namespace")
    for argv in unqueue_rules(layout):
        subprocess.run(_in_ns(ns, argv), capture_output=True, timeout=10)
    if layout.workers > 1:
        from fw.lab import steering as steer

        steer.remove(ns)


# -- counters ---------------------------------------------------------------------------------


def opener_limit_drops(ns: str | None = None) -> int | None:
    """Openers the per-source limit dropped before the queue (both families) in namespace `ns`
    (None: this process's); None when the counters cannot be read."""
    total = 0
    for tool in IPTABLES:
        argv = _in_ns(ns, [tool, "-t", TABLE, "-L", "PREROUTING", "-v", "-x", "-n"])
        try:
            res = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        if res.returncode != 0:
            return None
        total += sum(int(line.split()[0]) for line in res.stdout.splitlines()
                     if "limit: above" in line)
    return total


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


BACKENDS = ("netlink", "netfilterqueue")


def open_backend(
    name: str,
    queue_num: int = 0,
    *,
    fail_open: bool = False,
    max_len: int | None = None,
    rcvbuf: int | None = None,
    max_batch: int | None = None,
    aliases: dict[str, str] | None = None,
    reset_mark: bool = False,
) -> QueueBackend:
    """A backend by name (not bound yet). `fail_open` asks the kernel to accept instead of
    dropping when the queue is full (netlink only: netfilterqueue cannot set that flag);
    `aliases` renames devices for the engine (queue_backend.IfNames); `reset_mark`: every
    verdict sets the packet's mark back to 0 (the workers' steering mark; netlink only)."""
    given = (("max_len", max_len), ("rcvbuf", rcvbuf), ("max_batch", max_batch),
             ("ifnames", IfNames(aliases) if aliases else None))
    kwargs = {k: v for k, v in given if v is not None}
    if name == "netlink":
        from fw.lab.queue_netlink import NetlinkBackend

        return NetlinkBackend(queue_num, fail_open=fail_open, reset_mark=reset_mark, **kwargs)
    if name == "netfilterqueue":
        from fw.lab.queue_nfq import NetfilterqueueBackend

        return NetfilterqueueBackend(queue_num, **kwargs)
    raise ValueError(f"unknown queue backend {name!r} (one of {', '.join(BACKENDS)})")


# -- the adapter ------------------------------------------------------------------------------


class NfqueueAdapter:
    """Binds one queue (in the namespace this process runs in) through a queue backend
    (fw/lab/queue_backend.py) and hands every packet to a per-packet handler.

    A handler exception drops the packet (fail closed) and is counted in `errors`; the last one is
    kept in `last_error`. Every packet gets exactly one verdict."""

    def __init__(
        self,
        queue_num: int = 0,
        *,
        backend: str = "netfilterqueue",
        fail_open: bool = False,
        max_len: int | None = None,
        rcvbuf: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.queue_num = queue_num
        self.clock = clock
        self.backend = open_backend(
            backend, queue_num, fail_open=fail_open, max_len=max_len, rcvbuf=rcvbuf
        )
        self.judge_errors = JudgeErrors()
        self._judge: BatchJudge | None = None

    @property
    def rcvbuf(self) -> int | None:
        return self.backend.rcvbuf

    @property
    def errors(self) -> int:
        return self.judge_errors.count

    @property
    def last_error(self) -> BaseException | None:
        return self.judge_errors.last

    def bind(self, handler: Handler) -> None:
        """Bind the queue (in this process's namespace)."""
        self._judge = judge_each(handler, self.judge_errors, self.clock)
        self.backend.bind()

    def run(
        self,
        handler: Handler | None = None,
        *,
        stop: threading.Event | None = None,
        poll: float = 0.2,
    ) -> None:
        """Bind (unless bind() was called) and hand packets to `handler` until `stop` is set or a
        KeyboardInterrupt/SystemExit arrives (also from inside the handler). The queue is unbound
        on the way out."""
        if self._judge is None:
            if handler is None:
                raise ValueError("run() needs a handler (or call bind(handler) first)")
            self.bind(handler)
        assert self._judge is not None
        try:
            serve(
                self.backend,
                self._judge,
                stop=stop or threading.Event(),
                timeout=lambda: poll,
                errors=self.judge_errors,
            )
        finally:
            self.close()

    def stats(self) -> QueueStats | None:
        """This queue's kernel counters (read in the adapter's own namespace)."""
        for s in queue_stats(None):
            if s.queue_num == self.queue_num:
                return s
        return None

    def counters(self) -> dict[str, int | None]:
        return {"backend": self.backend.name, **self.backend.counters(), "errors": self.errors}

    def close(self) -> None:
        self.backend.close()


# -- an accept-all consumer for the lab (python -m fw.lab.nfqueue) -----------------------------


def move_port(payload: bytes, old: int, new: int) -> bytes | None:
    """An IPv4 TCP/UDP packet to port `old` sent to `new` instead, and one from `new` made to
    come from `old` (a port forward in miniature, for the tests of rewritten packets); None when
    the packet is neither."""
    from fw.engine.checksum import rewrite_v4
    from fw.engine.packet import decode

    pkt = decode(payload)
    if pkt.family != 4 or pkt.proto not in PORT_PROTOCOLS or pkt.invalid or pkt.sport < 0:
        return None
    buf = bytearray(payload)
    if pkt.dport == old:
        rewrite_v4(buf, pkt, dport=new)
    elif pkt.sport == new:
        rewrite_v4(buf, pkt, sport=old)
    else:
        return None
    return bytes(buf)


class _Consumer:
    """The consumer's batch judge: accept (or drop, or move a port), log what arrived."""

    def __init__(self, drop: set[int], move: tuple[int, int] | None, log: Any, log_max: int):
        self.drop, self.move, self.log, self.log_left = drop, move, log, log_max
        self.max_len = 0

    def __call__(self, packets: Sequence[QueuedPacket]) -> list[Verdict]:
        return [self.judge(p) for p in packets]

    def judge(self, p: QueuedPacket) -> Verdict:
        proto = ip_protocol(p.payload)
        self.max_len = max(self.max_len, len(p.payload))
        verdict = DROP if proto in self.drop else ACCEPT
        if verdict is ACCEPT and self.move is not None:
            new = move_port(p.payload, *self.move)
            verdict = Verdict(True, new) if new is not None else ACCEPT
        if self.log is not None and self.log_left > 0:
            self.log_left -= 1
            self.log.write(
                json.dumps(
                    {
                        "hook": p.hook,
                        "iif": p.iif,
                        "oif": p.oif,
                        "len": len(p.payload),
                        "version": p.payload[0] >> 4,
                        "proto": proto,
                        "skb_info": p.skb_info,
                        "verdict": "accept" if verdict.accept else "drop",
                        "rewritten": verdict.payload is not None,
                    }
                )
                + "\n"
            )
        return verdict


def _port_pair(text: str) -> tuple[int, int]:
    old, _, new = text.partition(":")
    return int(old), int(new)


def _arguments(argv: Sequence[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(
        prog="python -m fw.lab.nfqueue",
        description="Accept-all NFQUEUE consumer for the lab (run inside the firewall namespace).",
    )
    ap.add_argument("--queue", type=int, default=0)
    ap.add_argument("--backend", choices=BACKENDS, default="netfilterqueue")
    ap.add_argument("--fail-open", action="store_true", help="netlink: a full queue accepts")
    ap.add_argument(
        "--drop",
        action="append",
        default=[],
        choices=sorted(PROTOCOLS),
        help="drop this protocol instead of accepting it (repeatable)",
    )
    ap.add_argument(
        "--move-port",
        type=_port_pair,
        metavar="OLD:NEW",
        help="IPv4 TCP/UDP to port OLD goes to NEW, replies come from OLD",
    )
    ap.add_argument("--log", type=Path, help="write one JSON line of metadata per packet here")
    ap.add_argument("--log-max", type=int, default=1000, help="log at most this many packets")
    ap.add_argument("--rcvbuf", type=int)
    ap.add_argument("--max-len", type=int)
    return ap.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = _arguments(argv)
    log = args.log.open("a", buffering=1) if args.log else None
    judge = _Consumer({PROTOCOLS[p] for p in args.drop}, args.move_port, log, args.log_max)
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    backend = open_backend(
        args.backend, args.queue, fail_open=args.fail_open, max_len=args.max_len, rcvbuf=args.rcvbuf
    )
    backend.bind()
    st = next((s for s in queue_stats(None) if s.queue_num == args.queue), None)
    ready = {
        "ready": True,
        "pid": os.getpid(),
        "queue": args.queue,
        "backend": backend.name,
        "rcvbuf": backend.rcvbuf,
        "requested_rcvbuf": getattr(backend, "requested_rcvbuf", 0),
        "kernel": asdict(st) if st else None,
    }
    print(json.dumps(ready), flush=True)
    errors = JudgeErrors()
    try:
        serve(backend, judge, stop=stop, errors=errors)
    finally:
        backend.close()
        done = {
            "done": True,
            **backend.counters(),
            "errors": errors.count,
            "max_len": judge.max_len,
        }
        print(json.dumps(done), flush=True)
        if log is not None:
            log.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
