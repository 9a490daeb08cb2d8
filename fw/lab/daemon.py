"""The engine daemon (`fwlab run`): the sans-IO engine behind a kernel queue backend, in the
firewall namespace of a lab.

Its supervisor (supervisor.py, which `fwlab up` starts in the firewall namespace) forks it and
forks a new one when it dies. It reads the lab's topology from the lab's state file, builds the
engine's routing table from it, takes the compiled rules the lab keeps (rulestore.py: it never
reads a user's rule file, so no include can hang it), binds queue 1 (TCP connection openers,
when the lab has that queue) and queue 0 (everything else), and then answers on a control
socket; `up` waits for that answer.

Threads, and why: the main thread drives the queue backend (queue_backend.serve: `--backend
netlink`, GSO packets and batched verdicts, or `netfilterqueue`): it waits for packets at most
until the engine's next expiry is due (engine.next_expiry()), so an idle lab forgets its
connections too, and judges what arrived as one batch. A control thread accepts on the Unix
socket and answers each request in a thread of its own (a client that says nothing cannot make
`status` wait); a timer thread flushes the log. One lock guards the engine: the packet path holds
it once per batch (logging, reject replies and crash reports wait until it is released). A reload
waits for that lock only until the deadline its command gave, and is applied then or not at all.

What the daemon adds around the engine:
- a reject's reply (RST / ICMP unreachable) is sent with a raw socket from the firewall namespace;
  that packet comes back through the OUTPUT queue rule and is let through without asking the
  engine (the daemon recognises its own packets), as the kernel's own REJECT target does;
- traffic on the firewall's loopback never reaches the engine (as `iif lo accept` in any ruleset);
- an exception in the engine drops that one packet and is logged with the packet in hex;
- every drop and reject and every `log` statement is one JSON line in `engine.log` (capped: at
  MAX_LOG_BYTES it becomes `engine.log.1`, replacing an older one).

SIGTERM stops it. The queue rules stay: without a listener the kernel drops every packet (fail
closed) until the supervisor has started a new daemon or the lab is taken down; removing them
would let traffic through unjudged.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time
import traceback
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from fw import views
from fw.core.text import rule_ref
from fw.errors import FwlabError, LabError
from fw.lab import ifmap, rulestore
from fw.lab import netns as labns
from fw.lab.engine_glue import load_rules, routing_for, rules_path
from fw.lab.eventlog import LOG_LINES_PER_SECOND, JsonLog, LineLimit, packet_summary
from fw.lab.memtrim import Trimmer
from fw.lab.monitor import COMMANDS as MONITOR_COMMANDS
from fw.lab.monitor import Monitor
from fw.lab.queue_backend import ACCEPT, DROP, JudgeErrors, QueuedPacket, Verdict, serve
from fw.lab.runtime import check_lab_name, control_path, lab_dir, log_path

__all__ = ["Daemon", "ReplySender", "run"]

MAX_REQUEST = 64 << 20  # a reload carries a compiled rule set
CONTROL_THREADS = 8  # requests answered at once; one slow client does not block `status`
DEFAULT_BACKEND = "netlink"
MAX_WAIT = 0.5  # seconds the queue waits for packets before the loop looks at the timers again
EXPIRY_CHECKS = 0.05  # and it looks at most 20 times a second
OPENERS_BATCH = 32  # openers judged after each batch of the main queue (docs/lab.md, "Floods")
OPENERS_RCVBUF = 4 << 20  # bytes: the openers queue's own max_len bounds what waits
# bytes copied of each packet while no packet can leave rewritten: more than the largest packet
# of the lab's links (MTU 1500, so ICMP errors and fragments arrive whole), far less than a
# 64 KiB GSO packet, whose copy into userspace was the live TCP path's largest cost
HEADERS_COPY = 2048
WHOLE_COPY = 0xFFFF


# -- reject replies -----------------------------------------------------------------------------


class ReplySender:
    """Sends a reject's reply (a complete IP packet) from the firewall namespace with raw sockets
    (IPPROTO_RAW: the header is ours, IP_HDRINCL for IPv4 and implied for IPv6).

    The packet then meets the OUTPUT queue rule like anything the namespace sends. `is_own`
    recognises it there (source, destination and everything after the IP header, which the
    kernel does not touch; it does fill in the IPv4 id and header checksum), so the daemon lets
    it out without asking the engine: the firewall's answer is not traffic to be judged."""

    def __init__(self, remember: int = 256, ttl: float = 2.0, mark: int = 0) -> None:
        self.mark = mark  # several workers: the sender's own, so the steering leaves it alone
        self.sent = self.errors = 0
        self.last_error: str | None = None
        self._socks: dict[int, socket.socket] = {}
        self._own: OrderedDict[bytes, float] = OrderedDict()
        self._remember, self._ttl = remember, ttl

    def _socket(self, version: int) -> socket.socket:
        sock = self._socks.get(version)
        if sock is None:
            family = socket.AF_INET if version == 4 else socket.AF_INET6
            sock = socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_RAW)
            if version == 4:
                sock.setsockopt(socket.IPPROTO_IP, socket.IP_HDRINCL, 1)
            if self.mark:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_MARK, self.mark)
            self._socks[version] = sock
        return sock

    @staticmethod
    def key(packet: bytes) -> bytes | None:
        """Addresses + the bytes after the IP header: what the kernel leaves as we wrote it."""
        if not packet:
            return None
        version = packet[0] >> 4
        if version == 4 and len(packet) >= 20:
            return b"4" + packet[12:20] + packet[(packet[0] & 0x0F) * 4 :]
        if version == 6 and len(packet) >= 40:
            return b"6" + packet[8:40] + packet[40:]
        return None

    def send(self, packet: bytes, now: float) -> bool:
        version = packet[0] >> 4 if packet else 0
        try:
            if version == 4:
                dst = socket.inet_ntop(socket.AF_INET, packet[16:20])
            elif version == 6:
                dst = socket.inet_ntop(socket.AF_INET6, packet[24:40])
            else:
                raise ValueError(f"not an IP packet (version {version})")
            key = self.key(packet)
            if key is not None:
                self._own[key] = now + self._ttl
                while len(self._own) > self._remember:
                    self._own.popitem(last=False)
            self._socket(version).sendto(packet, (dst, 0))
            self.sent += 1
            return True
        except (OSError, ValueError) as exc:
            self.errors += 1
            self.last_error = f"{type(exc).__name__}: {exc}"
            return False

    def is_own(self, packet: bytes, now: float) -> bool:
        if not self._own:
            return False
        key = self.key(packet)
        expires = self._own.pop(key, None) if key is not None else None
        return expires is not None and expires >= now

    def close(self) -> None:
        for sock in self._socks.values():
            sock.close()
        self._socks.clear()


# -- the daemon ---------------------------------------------------------------------------------


class Daemon:
    """One lab's engine, its queue, control socket, timer and log. `start()` then `serve()`."""

    def __init__(
        self,
        name: str,
        rules: Path,
        *,
        queue_num: int = 0,
        backend: str = DEFAULT_BACKEND,
        fail_open: bool = False,
        conntrack_limit: int = 262_144,
        openers_maxlen: int = 0,
        worker: int = 0,
        workers: int = 1,
        ruleset: Any = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = check_lab_name(name)
        self.rules = rules
        self.worker, self.workers = worker, workers  # fw/lab/steering.py
        self.queue_num = queue_num + worker
        self.backend = backend
        self.fail_open = fail_open
        # the lab's limit, shared: each worker holds its part (status adds them up again)
        self.conntrack_limit = -(-conntrack_limit // workers)
        self.openers_maxlen = openers_maxlen  # 0: no openers queue (everything in queue 0)
        self.clock = clock
        self.lock = threading.Lock()
        self.stop_event = threading.Event()
        self.started_wall = time.time()
        self.started = clock()
        self.crashes = self.loopback = self.own_replies = self.reloads = 0
        self.reloaded_at: float | None = None
        self.replies = ReplySender(mark=worker + 1 if workers > 1 else 0)
        self.monitor = Monitor()  # conntrack --follow and trace (monitor.py)
        self.engine: Any = None
        self.ruleset: Any = ruleset
        self.queue: Any = None  # the QueueBackend
        self.openers: Any = None  # the openers queue's QueueBackend, when the lab has one
        self.judge_errors = JudgeErrors()
        self._due: float | None = None  # the engine's next expiry, as last asked
        self.trimmer = Trimmer()  # memory back to the system after a full table emptied
        self.copy_range = WHOLE_COPY  # what the queues copy of each packet (_fit_copy_range)
        self._narrow_at = 0.0  # when _narrow_copy_range may walk the connections again
        self._check_at = 0.0
        self.log: JsonLog | None = None
        self.packet_lines = LineLimit()
        self.lines_held_back = 0
        self._server: socket.socket | None = None
        self._threads: list[threading.Thread] = []
        self._answering = threading.BoundedSemaphore(CONTROL_THREADS)

    # -- set-up --------------------------------------------------------------------------------

    def start(self) -> None:
        """Build the engine from the lab's topology and rules, bind the queue, open the control
        socket, start the timer. Anything wrong is a LabError / RulesError before the queue is
        bound, so a failed start leaves the lab failing closed, never open."""
        from fw.engine.engine import Engine
        from fw.lab.nfqueue import open_backend

        handle = labns.attach(self.name)
        routing = (routing_for(handle.topology) if handle.topology is not None
                   else ifmap.namespace_routing(None, handle.devices))
        if self.ruleset is None:
            self.ruleset = load_rules(self.rules)
        # verify_checksums off: NFQUEUE does not say which packets carry a checksum not
        # computed yet (a local sender's on a veth), and those are not bad (docs/fidelity.md)
        self.engine = Engine(self.ruleset, routing, conntrack_limit=self.conntrack_limit,
                             verify_checksums=False)
        self._own_port_class(self.engine)
        self.monitor.watch(self.engine)
        lab_dir(self.name).mkdir(parents=True, exist_ok=True)
        self.log = JsonLog(log_path(self.name, self.worker))
        self.aliases = ifmap.aliases(handle.devices)  # devices renamed for the rules
        self.openers = self._bind_openers()
        self.queue = open_backend(self.backend, self.queue_num, fail_open=self.fail_open,
                                  aliases=self.aliases, reset_mark=self.workers > 1)
        self.queue.bind()
        self._fit_copy_range()
        self._server = self._listen(control_path(self.name, self.worker))
        for target in (self._control_loop, self._timer_loop):
            t = threading.Thread(target=target, name=target.__name__, daemon=True)
            t.start()
            self._threads.append(t)
        self._log_event("start", rules=str(self.rules), mode=self.ruleset.mode, pid=os.getpid(),
                        conntrack_limit=self.conntrack_limit, backend=self.backend,
                        openers_maxlen=self.openers_maxlen or None)

    def _own_port_class(self, engine: Any) -> None:
        """With several workers: new NAT mappings take only ports (ICMP ids) of this worker's
        class, the slice the steering sends their replies by (fw/lab/steering.py); rule sets
        whose state all flows share cannot be split and are refused (LabError)."""
        if self.workers == 1:
            return
        from fw.engine.shard import one_engine_only

        why = one_engine_only(engine.ruleset)
        if why is not None:
            raise LabError(f"{self.rules}: cannot run on {self.workers} workers: {why}; "
                           "use --workers 1")
        engine.nat.mappings.port_class = (self.workers, self.worker)

    def _fit_copy_range(self) -> None:
        """Whole packets while the engine may rewrite one (NAT gives the kernel the whole new
        packet back), else only their first HEADERS_COPY bytes: the engine judges headers
        (decode's `wire_len`). Asked at start and after each reload, under the lock."""
        self._set_copy_range(WHOLE_COPY if self.engine.rewrites() else HEADERS_COPY)

    def _set_copy_range(self, size: int) -> None:
        self.copy_range = size
        for queue in (self.queue, self.openers):
            if queue is not None:
                queue.set_copy_range(size)

    def _narrow_copy_range(self, now: float) -> None:
        """After a reload took NAT away, whole copies stay while connections it translated
        run; once expiry has ended the last of them, headers are enough again. Looked at after
        an expiry, at most once a second (it walks the connection table), and only then."""
        if self.copy_range == HEADERS_COPY or self.engine.nat.loaded or now < self._narrow_at:
            return
        self._narrow_at = now + 1.0
        if not self.engine.rewrites():
            self._set_copy_range(HEADERS_COPY)

    def _bind_openers(self) -> Any:
        """The queue of TCP connection openers (QueueLayout.openers_queue), bound first so that the
        lab is whole when `up` sees the daemon ready. Never fail-open, whatever the lab's mode:
        when `openers_maxlen` packets wait, the kernel drops the next opener (a flood is shed
        there, not in the main queue); fail-open would let the flood through unjudged."""
        from fw.lab.nfqueue import open_backend

        if not self.openers_maxlen:
            return None
        openers = open_backend(self.backend, self.workers + self.worker, fail_open=False,
                               max_len=self.openers_maxlen, rcvbuf=OPENERS_RCVBUF,
                               max_batch=OPENERS_BATCH, aliases=self.aliases,
                               reset_mark=self.workers > 1)
        openers.bind()
        return openers

    @staticmethod
    def _listen(path: Path) -> socket.socket:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # a stale socket of a daemon that was killed
        server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old = os.umask(0o077)  # root only: the socket can reload the rules
        try:
            server.bind(str(path))
        finally:
            os.umask(old)
        server.listen(16)
        server.settimeout(0.5)  # so the loop sees stop_event
        return server

    def serve(self) -> None:
        """Hand packets to the engine until SIGTERM/SIGINT (or stop_event), then clean up."""
        try:
            serve(self.queue, self.judge, stop=self.stop_event, timeout=self._wait,
                  errors=self.judge_errors, openers=self.openers)
        finally:
            self.close()

    def close(self) -> None:
        self.stop_event.set()
        for t in self._threads:
            t.join(timeout=2)
        if self._server is not None:
            self._server.close()
            self._server = None
            with contextlib.suppress(OSError):
                control_path(self.name, self.worker).unlink()
        self.replies.close()
        if self.log is not None:
            self._log_event("stop", **self.queue_counters())
            self.log.close()
        for queue in (self.queue, self.openers):
            if queue is not None:
                queue.close()  # unbound: the kernel drops what still waits (fail closed)

    def queue_counters(self) -> dict[str, Any]:
        if self.queue is None:
            return {}
        openers = {"openers": self.openers.counters()} if self.openers is not None else {}
        return {"backend": self.backend, **self.queue.counters(),
                "judge_errors": self.judge_errors.count, **openers}

    # -- the packet path -----------------------------------------------------------------------

    def judge(self, packets: Sequence[QueuedPacket], now: float | None = None) -> list[Verdict]:
        """A batch: the engine's verdicts under one hold of the lock; what they entail (log
        lines, reject replies, crash reports) once it is released."""
        now = self.clock() if now is None else now
        with self.lock:
            outcomes = [self._decide(p, now) for p in packets]
            self.monitor.drain(now)  # the batch's conntrack events, numbered in their order
        return [self._verdict(p, o, now) for p, o in zip(packets, outcomes, strict=True)]

    def handle(
        self, payload: bytes, hook: str, now: float, iif: str | None, oif: str | None
    ) -> tuple[str, bytes | None]:
        """One packet: the engine's verdict, and the rewritten bytes when NAT changed them."""
        (v,) = self.judge([QueuedPacket(0, hook, iif, oif, payload)], now)
        return ("accept", v.payload) if v.accept else ("drop", None)

    def _decide(self, p: QueuedPacket, now: float) -> Any:
        """The engine's Decision, ACCEPT for what it never sees, or the exception it raised."""
        if p.iif == "lo" or p.oif == "lo":
            self.loopback += 1
            return ACCEPT
        if p.hook == "output" and self.replies.is_own(p.payload, now):
            self.own_replies += 1
            return ACCEPT
        try:  # (per packet: no call that is not needed, nobody traces nearly always)
            cut = p.wire_len
            monitor = self.monitor
            traced = bool(monitor.sessions) and monitor.wants(self.engine, p.payload, p.hook,
                                                              p.iif, p.oif, now, cut)
            decision = self.engine.process(p.payload, hook=p.hook, iif=p.iif, oif=p.oif, now=now,
                                           trace=traced, wire_len=cut)
            if traced:
                monitor.record(self.engine, decision, p.payload, p.hook, cut)
            return decision
        except Exception as exc:
            return exc

    def _verdict(self, p: QueuedPacket, outcome: Any, now: float) -> Verdict:
        if outcome is ACCEPT:
            return ACCEPT
        if isinstance(outcome, Exception):
            self._crash(outcome, p.payload, p.hook, p.iif, p.oif)
            return DROP
        decision = outcome
        if decision.verdict == "accept":
            if decision.logs:
                self._log_statements(decision, p)
            if decision.packet is None:
                return ACCEPT
            return Verdict(True, decision.packet, forwarded=decision.chain == "forward")
        if decision.verdict == "reject" and decision.reply is not None:
            self.replies.send(decision.reply, now)
        self._log_verdict(decision, p)
        return DROP

    def _crash(
        self, exc: Exception, payload: bytes, hook: str, iif: str | None, oif: str | None
    ) -> None:
        self.crashes += 1
        tb = traceback.format_exception(type(exc), exc, exc.__traceback__)
        self._log_event(
            "crash",
            error=f"{type(exc).__name__}: {exc}",
            traceback="".join(tb[-6:]),
            hook=hook,
            iif=iif,
            oif=oif,
            packet_hex=payload.hex(),
            verdict="drop",
        )

    def _log_verdict(self, decision: Any, p: QueuedPacket) -> None:
        """One line per dropped or rejected packet; the prefixes of the `log` statements it met
        go on that line (one packet, one line, even when the deciding rule logs too)."""
        if not self.packet_lines.allow(time.monotonic()):
            return
        prefixes = [ev.prefix for ev in decision.logs]
        self._log_event(
            decision.verdict,
            prefixes=prefixes or None,
            verdict=decision.verdict,
            chain=decision.chain,
            rule=rule_ref(decision.rule),
            reason=decision.reason,
            reply_sent=decision.reply is not None if decision.verdict == "reject" else None,
            **packet_fields(decision, p.hook, packet_summary(p.payload, p.wire_len)),
        )

    def _log_statements(self, decision: Any, p: QueuedPacket) -> None:
        if not self.packet_lines.allow(time.monotonic()):
            return
        fields = packet_fields(decision, p.hook, packet_summary(p.payload, p.wire_len))
        for ev in decision.logs:
            level = {"level": ev.level} if ev.level else {}
            self._log_event("log", prefix=ev.prefix, chain=ev.chain, rule=rule_ref(ev.rule),
                            verdict=ev.verdict, **level, **fields)

    def _log_event(self, event: str, **fields: Any) -> None:
        if self.log is None:
            return
        entry = {"time": round(time.time(), 6), "event": event}
        entry.update({k: v for k, v in fields.items() if v is not None})
        if self.workers > 1:
            entry["worker"] = self.worker
        with contextlib.suppress(OSError, ValueError):
            self.log.write(entry)

    # -- the timer -----------------------------------------------------------------------------

    def _wait(self) -> float:
        """How long the queue may wait for packets: until the engine's next expiry (expired
        first when it is due), at most MAX_WAIT. The engine is asked at most 20 times a second."""
        now = self.clock()
        if now >= self._check_at:
            with self.lock:
                due = self.engine.next_expiry()
                if due is not None and due <= now:
                    self.engine.expire(now)
                    self.monitor.drain(now)
                    due = self.engine.next_expiry()
                    self._narrow_copy_range(now)
                entries = len(self.engine.conntrack)
            self.trimmer.note(entries)
            self._due, self._check_at = due, now + EXPIRY_CHECKS
        if self._due is None:
            return MAX_WAIT
        return min(MAX_WAIT, max(EXPIRY_CHECKS, self._due - now))

    def _timer_loop(self) -> None:
        """Flush the log (and say how many packet lines the rate limit held back)."""
        while not self.stop_event.wait(0.5):
            self._report_held_back()
            if self.log is not None:
                self.log.flush()

    def _report_held_back(self) -> None:
        held = self.packet_lines.take_held_back()
        if held:
            self.lines_held_back += held
            self._log_event("limited", lines_not_written=held,
                            limit=f"{LOG_LINES_PER_SECOND:.0f} packet lines/s")

    # -- the control socket --------------------------------------------------------------------

    def _control_loop(self) -> None:
        """Accept control connections; each is answered in a thread of its own (at most
        CONTROL_THREADS at once), so a client that says nothing cannot make `status` wait."""
        assert self._server is not None
        while not self.stop_event.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self._answering.acquire(blocking=False):
                with conn, contextlib.suppress(OSError):
                    conn.sendall(b'{"ok": false, "busy": true, "error": "too many requests"}\n')
                continue
            threading.Thread(target=self._answer_then_release, args=(conn,), daemon=True).start()

    def _answer_then_release(self, conn: socket.socket) -> None:
        try:
            with conn:
                self._answer(conn)
        finally:
            self._answering.release()

    def _answer(self, conn: socket.socket) -> None:
        conn.settimeout(5)
        try:
            data = bytearray()
            while not data.endswith(b"\n") and len(data) < MAX_REQUEST:
                chunk = conn.recv(1 << 20)
                if not chunk:
                    break
                data += chunk
            try:
                request = json.loads(data or b"{}")
                if not isinstance(request, dict):
                    raise ValueError("a request is a JSON object")
                reply = self.dispatch(request, waiting=lambda: _peer_waiting(conn))
            except ValueError as exc:
                reply = {"ok": False, "error": f"bad request: {exc}"}
            except Exception as exc:  # a bug must not end the control thread
                reply = {"ok": False, "error": f"internal error: {type(exc).__name__}: {exc}"}
            conn.sendall(json.dumps(reply, default=str).encode() + b"\n")
        except OSError:
            pass  # the client went away

    def dispatch(
        self, request: dict[str, Any], waiting: Callable[[], bool] = lambda: True
    ) -> dict[str, Any]:
        """Answer one control request: {"cmd": "ping" | "status" | "conntrack" | "nat" | "lb" |
        "reload", ...} -> {"ok": bool, ...}. `waiting()` says whether the client still waits
        for the answer (a reload is applied only then)."""
        cmd = request.get("cmd")
        if cmd == "ping":
            return {"ok": True, "pong": True, "pid": os.getpid(), "name": self.name,
                    "worker": self.worker}
        if cmd == "status":
            return self.status()
        if cmd in ("conntrack", "nat"):
            with self.lock:
                now = self.clock()
                rows = (
                    views.conntrack_rows(self.engine.conntrack, now)
                    if cmd == "conntrack"
                    else views.nat_rows(self.engine.nat, now)
                )
            return {"ok": True, "entries": rows}
        if cmd == "lb":  # fwlab lb: the pools of `dnat to POOL`
            with self.lock:
                now = self.clock()
                members = views.pool_rows(self.engine.nat, now)
                sticky = views.sticky_rows(self.engine.nat, now)
            return {"ok": True, "members": members, "sticky": sticky}
        if cmd == "reload":
            return self.reload(request, waiting)
        if cmd in MONITOR_COMMANDS:
            return self.monitor.dispatch(request, self.engine, self.clock(), self.lock)
        return {"ok": False, "error": f"unknown command {cmd!r}"}

    def status(self) -> dict[str, Any]:
        from fw.lab.nfqueue import opener_limit_drops, queue_stats

        with self.lock:
            engine = views.engine_status(self.engine)
            counters = self.queue_counters()
        queues = {q.queue_num: q for q in queue_stats(None)}
        kernel = queues.get(self.queue_num)
        openers = queues.get(self.openers.queue_num) if self.openers is not None else None
        return {
            "ok": True,
            "name": self.name,
            "pid": os.getpid(),
            "worker": self.worker,
            "worker_count": self.workers,
            "started": self.started_wall,
            "uptime": round(self.clock() - self.started, 3),
            "rules": str(self.rules),
            "mode": self.ruleset.mode,
            "queue": self.queue_num,
            "backend": self.backend,
            "fail_open": self.fail_open,
            "engine": engine,
            "adapter": counters,
            "kernel_queue": asdict(kernel) if kernel else None,
            "openers_queue": asdict(openers) if openers else None,
            "openers_maxlen": self.openers_maxlen,
            "openers_limited": opener_limit_drops() if self.openers is not None else None,
            "daemon": {
                "crashes": self.crashes,
                "loopback": self.loopback,
                "rejects_sent": self.replies.sent,
                "reject_send_errors": self.replies.errors,
                "reject_last_error": self.replies.last_error,
                "own_replies": self.own_replies,
                "reloads": self.reloads,
                "reloaded_at": self.reloaded_at,
                "log": str(log_path(self.name, self.worker)),
                "log_lines": self.log.lines if self.log else 0,
                "log_lines_held_back": self.lines_held_back,
                "memory_trims": self.trimmer.trims,
            },
        }

    def reload(
        self, request: dict[str, Any], waiting: Callable[[], bool] = lambda: True
    ) -> dict[str, Any]:
        """Swap in the compiled rules the request carries, atomically, if that can happen before
        its deadline (a time.monotonic() value: one clock for every process on the machine) and
        while the command that asked still waits; else change nothing and say so. The command
        read and compiled the file: the daemon never opens a user's file."""
        try:
            stored = rulestore.decode(request["compiled"])
            deadline = float(request.get("deadline", self.clock() + 10))
        except Exception:  # a garbled payload is a refusal, whatever unpickling raised
            return {"ok": False, "applied": False,
                    "error": "reload needs 'compiled': the rules as `fwlab reload` sends them"}
        from fw.engine.shard import one_engine_only

        why = one_engine_only(stored.ruleset) if self.workers > 1 else None
        if why is not None:
            return self._not_applied(stored, f"it cannot run on {self.workers} workers: {why}")
        if not self.lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            return self._not_applied(stored, "the engine was busy until the deadline")
        try:
            if time.monotonic() > deadline or not waiting():
                return self._not_applied(stored, "the command stopped waiting first")
            self.engine.reload(stored.ruleset)
            self._fit_copy_range()
        except FwlabError as exc:
            return self._not_applied(stored, str(exc))
        finally:
            self.lock.release()
        self.ruleset, self.rules = stored.ruleset, Path(stored.path)
        self._keep(stored)
        self.reloads += 1
        self.reloaded_at = time.time()
        self._log_event("reload", rules=stored.path, mode=stored.ruleset.mode)
        return {"ok": True, "applied": True, "rules": stored.path, "mode": stored.ruleset.mode}

    def _not_applied(self, stored: rulestore.StoredRules, why: str) -> dict[str, Any]:
        self._log_event("reload-refused", rules=stored.path, reason=why)
        return {"ok": False, "applied": False,
                "error": f"{stored.path}: not applied ({why}); the old rules stay"}

    def _keep(self, stored: rulestore.StoredRules) -> None:
        """What a restarted daemon will run (worker 0 keeps it for all). A failure costs only
        that: logged, not fatal."""
        if self.worker:
            return
        try:
            rulestore.store(self.name, stored)
        except OSError as exc:
            self._log_event("error", error=f"cannot keep the rules for a restart: {exc}")


def _peer_waiting(conn: socket.socket) -> bool:
    """False when the client has closed its end (it gave up or was killed). Looks without
    waiting: a socket with a timeout would first wait for data, so it is made non-blocking."""
    timeout = conn.gettimeout()
    conn.settimeout(0.0)
    try:
        return conn.recv(1, socket.MSG_PEEK) != b""
    except BlockingIOError:
        return True
    except OSError:
        return False
    finally:
        conn.settimeout(timeout)


# -- entry point (`fwlab run`) -----------------------------------------------------------------


def packet_fields(decision: Any, hook: str, summary: dict[str, Any]) -> dict[str, Any]:
    """What every per-packet log line says about the packet and where it was met."""
    return {"ct_state": decision.ct_state, "hook": hook, "iif": decision.iif,
            "oif": decision.oif, "packet": summary}


def run(
    name: str,
    rules: str | None = None,
    *,
    queue_num: int = 0,
    backend: str = DEFAULT_BACKEND,
    fail_open: bool = False,
    conntrack_limit: int = 262_144,
    openers_maxlen: int = 0,
    worker: int = 0,
    workers: int = 1,
    on_ready: Callable[[], None] | None = None,
) -> int:
    """Run the daemon of lab `name` in this process (which must be in the lab's firewall
    namespace) until SIGTERM. Prints one JSON line, and calls `on_ready`, when it is ready."""
    if os.geteuid() != 0:
        raise LabError("fwlab run needs root (it binds an NFQUEUE): run it with sudo")
    stored = rules_to_run(name, rules)
    daemon = Daemon(name, Path(stored.path), queue_num=queue_num, backend=backend,
                    fail_open=fail_open, conntrack_limit=conntrack_limit,
                    openers_maxlen=openers_maxlen, worker=worker, workers=workers,
                    ruleset=stored.ruleset)

    def on_signal(signum: int, frame: object) -> None:
        daemon.stop_event.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        daemon.start()
    except BaseException:
        daemon.close()
        raise
    ready = {"ready": True, "pid": os.getpid(), "rules": stored.path, "backend": backend,
             "rcvbuf": daemon.queue.rcvbuf, "worker": worker}
    print(json.dumps(ready), flush=True)
    if on_ready is not None:
        on_ready()
    daemon.serve()
    print(json.dumps({"stopped": True, **daemon.queue_counters()}), flush=True)
    sys.stdout.flush()
    return 0


def rules_to_run(name: str, rules: str | None) -> rulestore.StoredRules:
    """The file `rules` when given (compiled here, then kept for restarts); else what the lab
    keeps (what `up` or the last reload put there); else the topology's file."""
    stored = None if rules is not None else rulestore.load_stored(name)
    if stored is None:
        path = rules_path(labns.attach(name).topology, rules)
        stored = rulestore.StoredRules(str(path), load_rules(path))
        rulestore.store(name, stored)
    return stored
