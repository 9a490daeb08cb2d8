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


def read_state(name: str) -> dict[str, Any] | None:
    """What the supervisor of lab `name` wrote last, or None."""
    try:
        state = json.loads(runtime.supervisor_path(name).read_text())
    except (OSError, ValueError):
        return None
    return state if isinstance(state, dict) else None


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
    """Fork the daemon, wait, fork again when it died on its own."""

    def __init__(self, name: str, daemon_kwargs: dict[str, Any]) -> None:
        self.name = runtime.check_lab_name(name)
        self.daemon_kwargs = daemon_kwargs
        self.stopping = self.restart_asked = False
        self.child: int | None = None
        old = read_state(name) or {}  # a supervisor started by `fwlab restart` counts on
        self.state: dict[str, Any] = {
            "supervisor_pid": os.getpid(),
            "supervisor_start": runtime.proc_start_time(os.getpid()),
            "restarts": int(old.get("restarts", 0)),
            "last_exit": old.get("last_exit"),
            "last_restart": old.get("last_restart"),
            "options": daemon_kwargs,
        }

    def run(self) -> int:
        """Until SIGTERM: keep a daemon running. Returns the exit status for the process."""
        self._signals()
        first, backoff = True, FIRST_BACKOFF
        while True:
            pid, ready = self._fork_daemon()
            status = self._wait(pid)
            was_ready = _was_ready(ready)
            if self.stopping:
                return 0
            if first and not was_ready:
                return _exit_code(status)
            first = False
            backoff = FIRST_BACKOFF if was_ready else min(backoff * 2, MAX_BACKOFF)
            self._count_restart(status)
            if not self.restart_asked and not was_ready:
                time.sleep(backoff)
            self.restart_asked = False

    def _signals(self) -> None:
        def stop(signum: int, frame: object) -> None:
            self.stopping = True
            self._signal_child(signal.SIGTERM)

        def restart(signum: int, frame: object) -> None:
            self.restart_asked = True
            self._signal_child(signal.SIGTERM)

        signal.signal(signal.SIGTERM, stop)
        signal.signal(signal.SIGINT, stop)
        signal.signal(signal.SIGHUP, restart)

    def _signal_child(self, sig: int) -> None:
        if self.child is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.child, sig)

    def _fork_daemon(self) -> tuple[int, int]:
        """Fork a daemon; returns its pid and a pipe that gets one byte when it is ready."""
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid == 0:  # the daemon
            os.close(ready_r)
            _daemon_child(self.name, self.daemon_kwargs, ready_w)
        os.close(ready_w)
        self.child = pid
        self.state.update(daemon_pid=pid, daemon_start=runtime.proc_start_time(pid))
        _write_state(self.name, self.state)
        return pid, ready_r

    def _wait(self, pid: int) -> int:
        """Wait for the daemon (polling, POLL s late at most); the signal handlers pass SIGTERM
        on. A daemon asked to stop gets STOP_GRACE seconds, then SIGKILL."""
        asked_at: float | None = None
        while True:
            try:
                done, status = os.waitpid(pid, os.WNOHANG)
            except ChildProcessError:
                done, status = pid, 0
            if done:
                self.child = None
                return status
            if self.stopping or self.restart_asked:
                asked_at = asked_at or time.monotonic()
                if time.monotonic() - asked_at > STOP_GRACE:
                    self._signal_child(signal.SIGKILL)
            time.sleep(POLL)

    def _count_restart(self, status: int) -> None:
        why = "restart asked for (fwlab restart)" if self.restart_asked else _describe(status)
        self.state.update(restarts=self.state["restarts"] + 1, last_exit=why,
                          last_restart=time.time())
        _write_state(self.name, self.state)
        print(json.dumps({"restart": self.state["restarts"], "why": why}), flush=True)
        _log(self.name, {"event": "restart", "restarts": self.state["restarts"], "why": why})


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
    """One line in engine.log (the daemon, which writes it otherwise, is not running now)."""
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
    openers_maxlen: int = 0,
) -> int:
    """Start `fwlab supervise` in the lab's firewall namespace and wait until its daemon answers.
    Returns the daemon's pid."""
    argv = [sys.executable, "-m", "fw", "supervise", "--name", handle.name,
            "--conntrack-max", str(conntrack_max), "--backend", backend,
            "--openers-maxlen", str(openers_maxlen)]
    if fail_open:
        argv.append("--fail-open")
    with runtime.daemon_out_path(handle.name).open("ab") as out:
        proc = handle.spawn(handle.firewall_host, argv, stdin=subprocess.DEVNULL,
                            stdout=out, stderr=out)
    from fw.lab import control

    return int(control.wait_ready(handle.name, proc.pid, timeout=START_TIMEOUT)["pid"])


def request_restart(handle: Any) -> int:
    """Restart lab's daemon by hand: by its supervisor (SIGHUP) when that runs, else with a new
    supervisor (the daemon died with the old one). Returns the new daemon's pid."""
    from fw.lab import control

    state = read_state(handle.name) or {}
    if alive(state, "supervisor"):
        os.kill(int(state["supervisor_pid"]), signal.SIGHUP)
        answer = control.wait_ready(handle.name, int(state["supervisor_pid"]),
                                    timeout=START_TIMEOUT, old_daemon=state.get("daemon_pid"))
        return int(answer["pid"])
    if state.get("supervisor_pid"):
        handle.stop(int(state["supervisor_pid"]))  # gone: this only forgets its lab.json entry
    state.update(restarts=int(state.get("restarts", 0)) + 1, last_restart=time.time(),
                 last_exit="restart asked for (fwlab restart); the supervisor was gone")
    _write_state(handle.name, state)
    options = state.get("options") or {}
    return spawn_supervisor(handle, fail_open=bool(options.get("fail_open")),
                            conntrack_max=int(options.get("conntrack_limit",
                                                          DEFAULT_CONNTRACK_MAX)),
                            backend=str(options.get("backend", "netlink")),
                            openers_maxlen=int(options.get("openers_maxlen", 0)))
