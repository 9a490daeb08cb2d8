"""The supervisor: a small parent of the engine daemon that starts it again when it dies.

`fwlab up` starts `fwlab supervise` in the lab's firewall namespace (LabHandle.spawn: a session
of its own, recorded in lab.json, so `down` ends it and the daemon with it). The supervisor forks
the daemon, waits for it, and when it ends without being asked to (a crash, a kill -9) forks a new
one at once. Forked, not executed: the new daemon inherits the supervisor's imported modules, so it
binds the queue again in a fraction of a second instead of paying Python's start-up. Meanwhile
nothing listens on the queue and the kernel drops every packet (fail closed; `--fail-open` lets
them pass). The supervisor touches neither the namespaces nor any other process of the lab.

The new daemon runs the rules the old one ran (rulestore.py). The connection table and NAT
mappings are lost: the old daemon's memory is gone, so connections start over (a TCP connection
in the middle of a transfer is then `invalid` for a stateful rule set, as after a reboot).

What it knows is in /run/fwlab/NAME/supervisor.json: its own pid and start time, the daemon's,
the number of restarts and why the last one happened; `fwlab status` shows it and every restart is
a `restart` line in engine.log. SIGHUP asks for a restart (`fwlab restart`); SIGTERM stops both.

A daemon that never became ready on the first start is not restarted: the supervisor exits with
its status and `up` reports the daemon's last words. After that, a daemon that fails to start is
tried again with a growing pause (at most MAX_BACKOFF seconds).

The daemon dies with its supervisor (PR_SET_PDEATHSIG), so no daemon outlives the process that
`down` ends, whatever killed the supervisor.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import os
import signal
import subprocess
import sys
import time
import traceback
from typing import Any

from fw.errors import FwlabError, LabError
from fw.lab import runtime
from fw.lab.topology import DEFAULT_CONNTRACK_MAX

__all__ = ["Supervisor", "read_state", "request_restart", "spawn_supervisor", "supervise"]

FIRST_BACKOFF = 0.05
MAX_BACKOFF = 5.0
STOP_GRACE = 3.0  # seconds a daemon asked to stop for a restart has before SIGKILL
POLL = 0.02
PR_SET_PDEATHSIG = 1
START_TIMEOUT = 15.0


# -- state file ---------------------------------------------------------------------------------


read_state = runtime.read_supervisor_state  # what the supervisor of a lab wrote last, or None


def _write_state(name: str, state: dict[str, Any]) -> None:
    path = runtime.supervisor_path(name)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
    os.replace(tmp, path)


def alive(state: dict[str, Any] | None, who: str) -> bool:
    """True when the process `who` ("supervisor" or "daemon") the state names still runs."""
    if not state or not state.get(f"{who}_pid"):
        return False
    return runtime.same_process(int(state[f"{who}_pid"]), state.get(f"{who}_start"))


# -- the supervisor -----------------------------------------------------------------------------


class Supervisor:
    """Fork the daemon (one per worker, `workers` in its options), wait, fork a worker again
    when it died on its own: the others keep running, so only the dead worker's flows fail
    closed meanwhile (its queues have no listener)."""

    def __init__(self, name: str, daemon_kwargs: dict[str, Any]) -> None:
        self.name = runtime.check_lab_name(name)
        self.daemon_kwargs = daemon_kwargs
        self.workers = int(daemon_kwargs.get("workers", 1))
        self.stopping = False
        self.restart_asked: set[int] = set()  # workers asked to stop for a restart
        self.children: dict[int, int] = {}  # pid -> worker
        self.ready: dict[int, int] = {}  # worker -> the read end of its ready pipe
        self.was_up: set[int] = set()  # workers that became ready once
        self.due: dict[int, float] = {}  # worker -> when to fork it again
        self.backoff = dict.fromkeys(range(self.workers), FIRST_BACKOFF)
        self.asked: dict[int, float] = {}  # pid asked to stop -> when
        self.ask_counted = False
        old = read_state(name) or {}  # a supervisor started by `fwlab restart` counts on
        self.state: dict[str, Any] = {
            "supervisor_pid": os.getpid(),
            "supervisor_start": runtime.proc_start_time(os.getpid()),
            "restarts": int(old.get("restarts", 0)),
            "last_exit": old.get("last_exit"),
            "last_restart": old.get("last_restart"),
            "options": daemon_kwargs,
            "workers": {},
        }

    def run(self) -> int:
        """Until SIGTERM: keep every worker running. Returns the exit status for the process."""
        self._signals()
        for worker in range(self.workers):
            self._fork_daemon(worker)
        while True:
            if self.stopping and not self.children:
                return 0
            self._fork_due()
            done = self._reap()
            if done is None:
                self._stop_slow_ones()
                time.sleep(POLL)
                continue
            worker, status = done
            code = self._after_exit(worker, status)
            if code is not None:
                return code

    def _after_exit(self, worker: int, status: int) -> int | None:
        """A worker ended: plan its next start; an exit status when the supervisor must end
        (a worker that never became ready on its first start: `up` reports why)."""
        was_ready = _was_ready(self.ready.pop(worker))
        asked = worker in self.restart_asked
        self.restart_asked.discard(worker)
        if self.stopping:
            return None
        if was_ready:
            self.was_up.add(worker)
        elif worker not in self.was_up:
            self._stop_all()
            return _exit_code(status)
        self.backoff[worker] = (FIRST_BACKOFF if was_ready
                                else min(self.backoff[worker] * 2, MAX_BACKOFF))
        self._count_restart(worker, status, asked)
        pause = 0.0 if asked or was_ready else self.backoff[worker]
        self.due[worker] = time.monotonic() + pause
        return None

    def _signals(self) -> None:
        def stop(signum: int, frame: object) -> None:
            self.stopping = True
            self._ask_to_stop()

        def restart(signum: int, frame: object) -> None:
            self.restart_asked.update(self.children.values())
            self.ask_counted = False  # one restart asked for, however many workers
            self._ask_to_stop()

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, restart)

    def _ask_to_stop(self) -> None:
        """SIGTERM every worker running now; _stop_slow_ones kills those that take too long."""
        now = time.monotonic()
        self.asked.update(dict.fromkeys(self.children, now))
        self._signal_children(signal.SIGTERM)

    def _signal_children(self, sig: int, pids: list[int] | None = None) -> None:
        for pid in list(self.children) if pids is None else pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)

    def _stop_all(self) -> None:
        """End the other workers (a first start failed): SIGTERM, then SIGKILL, and reap."""
        self.stopping = True
        self._signal_children(signal.SIGTERM)
        deadline = time.monotonic() + STOP_GRACE
        while self.children:
            if self._reap() is None:
                if time.monotonic() > deadline:
                    self._signal_children(signal.SIGKILL)
                time.sleep(POLL)

    def _fork_due(self) -> None:
        now = time.monotonic()
        for worker, when in list(self.due.items()):
            if when <= now and not self.stopping:
                del self.due[worker]
                self._fork_daemon(worker)

    def _fork_daemon(self, worker: int) -> int:
        """Fork worker `worker`'s daemon; its ready pipe gets one byte when it is ready."""
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the daemon
            os.close(ready_r)
            _daemon_child(self.name, {**self.daemon_kwargs, "worker": worker}, ready_w)
        os.close(ready_w)
        self.children[pid] = worker
        self.ready[worker] = ready_r
        start = runtime.proc_start_time(pid)
        self.state["workers"][str(worker)] = {"pid": pid, "start": start}
        if worker == 0:
            self.state.update(daemon_pid=pid, daemon_start=start)
        _write_state(self.name, self.state)
        return pid

    def _reap(self) -> tuple[int, int] | None:
        """A child that ended, as (worker, wait status), or None when all still run."""
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            pid, status = (next(iter(self.children)), 0) if self.children else (0, 0)
        if not pid or pid not in self.children:
            return None
        return self.children.pop(pid), status

    def _stop_slow_ones(self) -> None:
        """Workers asked to stop get STOP_GRACE seconds, then SIGKILL (only those: a worker
        already started again is left alone)."""
        self.asked = {pid: t for pid, t in self.asked.items() if pid in self.children}
        late = [pid for pid, t in self.asked.items() if time.monotonic() - t > STOP_GRACE]
        if late:
            self._signal_children(signal.SIGKILL, late)

    def _count_restart(self, worker: int, status: int, asked: bool) -> None:
        """A restart counts once: a worker that died, or `fwlab restart` (all workers)."""
        if asked and self.ask_counted:
            return
        self.ask_counted = self.ask_counted or asked
        why = "restart asked for (fwlab restart)" if asked else _describe(status)
        who = {"last_worker": None if asked or self.workers == 1 else worker}
        self.state.update(restarts=self.state["restarts"] + 1, last_exit=why,
                          last_restart=time.time(), **who)
        _write_state(self.name, self.state)
        print(json.dumps({"restart": self.state["restarts"], "why": why}), flush=True)
        _log(self.name, {"event": "restart", "restarts": self.state["restarts"], "why": why,
                         **({"worker": worker} if who["last_worker"] is not None else {})})


def _daemon_child(name: str, kwargs: dict[str, Any], ready_w: int) -> None:
    """The forked daemon: dies with the supervisor, tells it when ready, never returns."""
    code = 70
    try:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        _die_with_parent()
        from fw.lab.daemon import run

        def on_ready() -> None:
            os.write(ready_w, b"1")

        code = run(name, None, on_ready=on_ready, **kwargs)
    except FwlabError as exc:
        print(f"fwlab run: {exc}", file=sys.stderr)
        code = 2
    except BaseException:
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def _die_with_parent() -> None:
    """SIGKILL when the supervisor ends, and at once if it already has."""
    parent = os.getppid()
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() != parent:
        os._exit(1)


def _was_ready(fd: int) -> bool:
    try:
        os.set_blocking(fd, False)
        return os.read(fd, 1) == b"1"
    except BlockingIOError:
        return False
    finally:
        os.close(fd)


def _exit_code(status: int) -> int:
    return os.waitstatus_to_exitcode(status) if status else 0


def _describe(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return f"killed by {signal.Signals(sig).name}" if sig in signal.valid_signals() else \
            f"killed by signal {sig}"
    return f"exited with status {os.waitstatus_to_exitcode(status)}"


def _log(name: str, event: dict[str, Any]) -> None:
    """One line in engine.log (worker 0's; the daemon that writes it otherwise may not run)."""
    from fw.lab.eventlog import JsonLog

    with contextlib.suppress(OSError):
        log = JsonLog(runtime.log_path(name))
        log.write({"time": round(time.time(), 6), **event})
        log.close()


def _preload() -> None:
    """Import what the daemon needs once, here, so every forked daemon starts with it."""
    import fw.engine.engine
    import fw.lab.daemon
    import fw.lab.nfqueue
    import fw.lab.queue_netlink  # noqa: F401


def supervise(name: str, **daemon_kwargs: Any) -> int:
    """`fwlab supervise`: run the supervisor of lab `name` in this process."""
    if os.geteuid() != 0:
        raise LabError("fwlab supervise needs root: run it with sudo")
    _preload()
    return Supervisor(name, daemon_kwargs).run()


# -- the command side ---------------------------------------------------------------------------


def spawn_supervisor(
    handle: Any, *, fail_open: bool, conntrack_max: int, backend: str = "netlink",
    openers_maxlen: int = 0, workers: int = 1,
) -> int:
    """Start `fwlab supervise` in the lab's firewall namespace and wait until every worker's
    daemon answers. Returns worker 0's pid."""
    argv = [sys.executable, "-m", "fw", "supervise", "--name", handle.name,
            "--conntrack-max", str(conntrack_max), "--backend", backend,
            "--openers-maxlen", str(openers_maxlen), "--workers", str(workers)]
    if fail_open:
        argv.append("--fail-open")
    with runtime.daemon_out_path(handle.name).open("ab") as out:
        proc = handle.spawn(handle.firewall_host, argv, stdin=subprocess.DEVNULL,
                            stdout=out, stderr=out)
    return _wait_workers(handle.name, proc.pid, workers, {})


def _wait_workers(name: str, supervisor_pid: int, workers: int,
                  old: dict[str, Any]) -> int:
    """Wait until each worker (other than the one in `old`, its last state) answers; worker
    0's pid."""
    from fw.lab import control

    pids = [int(control.wait_ready(name, supervisor_pid, timeout=START_TIMEOUT,
                                   old_daemon=(old.get(str(w)) or {}).get("pid"),
                                   worker=w)["pid"])
            for w in range(workers)]
    return pids[0]


def request_restart(handle: Any) -> int:
    """Restart lab's daemon by hand: by its supervisor (SIGHUP) when that runs, else with a new
    supervisor (the daemon died with the old one). Returns the new daemon's (worker 0's) pid."""
    state = read_state(handle.name) or {}
    options = state.get("options") or {}
    workers = int(options.get("workers", 1))
    if alive(state, "supervisor"):
        old = state.get("workers") or {"0": {"pid": state.get("daemon_pid")}}
        os.kill(int(state["supervisor_pid"]), signal.SIGHUP)
        return _wait_workers(handle.name, int(state["supervisor_pid"]), workers, old)
    if state.get("supervisor_pid"):
        handle.stop(int(state["supervisor_pid"]))  # gone: this only forgets its lab.json entry
    state.update(restarts=int(state.get("restarts", 0)) + 1, last_restart=time.time(),
                 last_exit="restart asked for (fwlab restart); the supervisor was gone")
    _write_state(handle.name, state)
    return spawn_supervisor(handle, fail_open=bool(options.get("fail_open")),
                            conntrack_max=int(options.get("conntrack_limit",
                                                          DEFAULT_CONNTRACK_MAX)),
                            backend=str(options.get("backend", "netlink")),
                            openers_maxlen=int(options.get("openers_maxlen", 0)),
                            workers=workers)
