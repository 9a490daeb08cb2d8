"""The client side of a lab daemon's control socket: one JSON request, one JSON answer.

The socket is /run/fwlab/<lab>/control.sock, root only (it can reload the rules). Every way of
not reaching the daemon is one LabError line that says what to do, never a traceback.
"""

from __future__ import annotations

import json
import os
import socket
import time
from typing import Any

from fw.errors import LabError
from fw.lab import runtime

__all__ = ["DaemonBusy", "DaemonGone", "daemon_running", "no_lab", "request", "request_all",
           "wait_ready", "worker_count"]


class DaemonGone(LabError):
    """Nothing listens on the control socket: no daemon, or no lab."""


class DaemonBusy(LabError):
    """The daemon took the connection but did not answer in time: alive, but busy or stuck."""


def _socket_path(name: str, worker: int = 0) -> str:
    return str(runtime.control_path(name, worker))


def _not_there(name: str) -> LabError:
    if runtime.state_path(name).exists():
        return DaemonGone(
            f"lab {name!r}: the engine daemon is not running, so every packet is dropped "
            f"(fail closed); `sudo fwlab restart --name {name}` starts it again"
        )
    return no_lab(name)


def no_lab(name: str) -> DaemonGone:
    """There is no lab `name`: say which labs there are, so `--name` is the obvious next step."""
    from fw.lab.netns import list_labs

    others = [lab for lab in list_labs() if lab != name]
    if not others:
        return DaemonGone(f"no lab {name!r} is up: start one with `sudo fwlab up --name {name}`")
    return DaemonGone(f"no lab {name!r} is up; labs up: {', '.join(others)} "
                      f"(pick one with --name, e.g. `sudo fwlab status --name {others[0]}`; "
                      "`sudo fwlab list` shows them all)")


def request(name: str, obj: dict[str, Any], timeout: float = 5.0,
            worker: int = 0) -> dict[str, Any]:
    """Send `obj` to lab `name`'s daemon (worker `worker`'s) and return its answer
    ({"ok": bool, ...})."""
    path = _socket_path(name, worker)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.settimeout(timeout)
    try:
        try:
            sock.connect(path)
        except (FileNotFoundError, ConnectionRefusedError):
            raise _not_there(name) from None
        except PermissionError:
            raise LabError(f"{path}: permission denied: run it with sudo") from None
        sock.sendall(json.dumps(obj).encode() + b"\n")
        data = b""
        while not data.endswith(b"\n"):
            chunk = sock.recv(1 << 16)
            if not chunk:
                break
            data += chunk
    except TimeoutError:
        raise DaemonBusy(
            f"lab {name!r}: the engine daemon is busy: it did not answer within {timeout:g} s"
        ) from None
    except OSError as exc:
        raise LabError(f"lab {name!r}: control socket: {exc.strerror or exc}") from None
    finally:
        sock.close()
    try:
        answer = json.loads(data)
    except ValueError:
        raise LabError(f"lab {name!r}: the engine daemon sent a garbled answer") from None
    if not isinstance(answer, dict):
        raise LabError(f"lab {name!r}: the engine daemon sent a garbled answer")
    return answer


def worker_count(name: str) -> int:
    """How many engine workers lab `name` runs (its supervisor's options; 1 when unknown)."""
    options = (runtime.read_supervisor_state(name) or {}).get("options") or {}
    return max(1, int(options.get("workers", 1)))


def request_all(name: str, obj: dict[str, Any], timeout: float = 5.0) -> list[dict[str, Any]]:
    """Every worker's answer to `obj`, in worker order, each with its "worker". With one worker
    its errors are raised as request() raises them; with several, a worker that does not answer
    (dead and being restarted, say) gives {"ok": False, "worker": W, "error": ...} and only
    when none answers is the first error raised."""
    count = worker_count(name)
    if count == 1:
        return [{**request(name, obj, timeout), "worker": 0}]
    answers, first = [], None
    for worker in range(count):
        try:
            answers.append({**request(name, obj, timeout, worker=worker), "worker": worker})
        except LabError as exc:
            first = first or exc
            answers.append({"ok": False, "worker": worker, "error": str(exc)})
    if first is not None and not any(a.get("ok") for a in answers):
        raise first
    return answers


def daemon_running(name: str) -> bool:
    """True when the daemon answers a ping."""
    try:
        return bool(request(name, {"cmd": "ping"}, timeout=2).get("ok"))
    except LabError:
        return False


def wait_ready(
    name: str, pid: int, timeout: float = 15.0, old_daemon: int | None = None,
    worker: int = 0,
) -> dict[str, Any]:
    """Wait until a daemon other than `old_daemon` answers a ping; LabError when process `pid`
    (the daemon's supervisor) exits first or the time runs out. Polls: the daemon opens its
    socket only after binding the queue."""
    deadline = time.monotonic() + timeout
    delay = 0.02
    while True:
        if not runtime.pid_alive(pid):
            raise LabError("the engine daemon exited during start-up")
        if os.path.exists(_socket_path(name, worker)):
            try:
                answer = request(name, {"cmd": "ping"}, timeout=2, worker=worker)
                if answer.get("ok") and answer.get("pid") != old_daemon:
                    return answer
            except LabError:
                pass
        if time.monotonic() > deadline:
            who = f"worker {worker} of the engine daemon" if worker else "the engine daemon"
            raise LabError(f"{who} did not come up within {timeout:g} s")
        time.sleep(delay)
        delay = min(delay * 1.5, 0.2)
