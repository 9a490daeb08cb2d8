"""Fixtures for the real-namespace tests: labs that are always torn down, an NFQUEUE consumer in
the firewall namespace, a bounded TCP echo check.

Tests marked `lab` are skipped unless running as root with `ip`, `iptables-nft` and `ping`.
Every subprocess has a timeout; every lab is torn down at the end of its test, failed or not,
and the fixture then asserts that no namespace with the lab's prefix is left."""

from __future__ import annotations

import itertools
import json
import os
import select
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from fw.lab import netns as labns
from fw.lab import runtime
from fw.lab.topology import Topology, default_topology

HERE = Path(__file__).parent
_counter = itertools.count()


def _lab_unavailable() -> str | None:
    if os.geteuid() != 0:
        return "lab tests need root (network namespaces, iptables, NFQUEUE)"
    for tool in ("ip", "iptables-nft", "ip6tables-nft", "ping"):
        if shutil.which(tool) is None:
            return f"lab tests need {tool!r} on PATH"
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    reason = _lab_unavailable()
    for item in items:
        if HERE not in Path(str(item.fspath)).parents:
            continue
        if reason and item.get_closest_marker("lab"):
            item.add_marker(pytest.mark.skip(reason=reason))


def new_lab_name() -> str:
    """Unique per test process and call: t<pid><n> (letters and digits only, as lab names must)."""
    return f"t{os.getpid()}{next(_counter)}"


@pytest.fixture
def lab_factory() -> Iterator[Callable[..., labns.LabHandle]]:
    """make(topology=None, name=None) -> LabHandle; every lab made is torn down afterwards."""
    made: list[str] = []

    def make(topology: Topology | None = None, name: str | None = None) -> labns.LabHandle:
        name = name or new_lab_name()
        made.append(name)
        return labns.up(topology or default_topology(), name)

    yield make
    errors = []
    for name in made:
        try:
            labns.down(name)
        except Exception as exc:  # keep tearing the others down
            errors.append(f"{name}: {exc}")
        left = labns.lab_namespaces(name)
        if left:
            errors.append(f"{name}: namespaces left behind: {left}")
        if (labns.RUN_DIR / name).exists():
            errors.append(f"{name}: state directory left behind")
    assert not errors, "; ".join(errors)


@pytest.fixture
def lab(lab_factory: Callable[..., labns.LabHandle]) -> labns.LabHandle:
    """The default lab under a unique name."""
    return lab_factory()


def ping(lab: labns.LabHandle, host: str, dst: str, count: int = 1, wait: float = 1.0) -> bool:
    """True when every one of `count` echo requests got its reply (bounded: count * wait + 5 s)."""
    res = lab.run(
        host,
        ["ping", "-n", "-q", "-c", str(count), "-i", "0.2", "-W", str(wait), dst],
        timeout=count * wait + 5,
    )
    return res.returncode == 0


_ECHO_SERVER = r"""
import socket, sys
host, port = sys.argv[1], int(sys.argv[2])
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((host, port)); s.listen(4); s.settimeout(8)
print("listening", flush=True)
try:
    while True:
        c, _ = s.accept()
        c.settimeout(3)
        data = c.recv(1024)
        c.sendall(b"echo:" + data)
        c.close()
except (TimeoutError, socket.timeout):
    pass
"""

_ECHO_CLIENT = r"""
import socket, sys
host, port, timeout = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM); s.settimeout(timeout)
try:
    s.connect((host, port)); s.sendall(b"hello"); print(s.recv(1024).decode())
except OSError as e:
    print("error", type(e).__name__, e); sys.exit(1)
"""


class EchoServer:
    """A TCP echo server in one host of a lab (bounded: exits 8 s after its last connection)."""

    def __init__(self, lab: labns.LabHandle, host: str, addr: str, port: int) -> None:
        self.lab, self.addr, self.port = lab, addr, port
        self.proc = lab.exec(
            host,
            [sys.executable, "-c", _ECHO_SERVER, addr, str(port)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = read_line(self.proc, timeout=5)
        assert line.strip() == "listening", f"echo server did not start: {line!r}"

    def check(self, client: str, timeout: float = 2.0) -> bool:
        """Connect from `client`, send 'hello', True if 'echo:hello' came back."""
        res = self.lab.run(
            client,
            [sys.executable, "-c", _ECHO_CLIENT, self.addr, str(self.port), str(timeout)],
            timeout=timeout + 5,
        )
        return res.returncode == 0 and res.stdout.strip() == "echo:hello"

    def close(self) -> None:
        self.proc.kill()  # a process this test started, by its Popen handle (PID)
        self.proc.communicate(timeout=5)


@pytest.fixture
def echo_server() -> Iterator[Callable[..., EchoServer]]:
    servers: list[EchoServer] = []

    def start(lab: labns.LabHandle, host: str, addr: str, port: int = 8080) -> EchoServer:
        srv = EchoServer(lab, host, addr, port)
        servers.append(srv)
        return srv

    yield start
    for srv in servers:
        srv.close()


def read_line(proc: subprocess.Popen, timeout: float) -> str:
    """One line of proc.stdout, waiting at most `timeout` seconds ('' on timeout or EOF)."""
    assert proc.stdout is not None
    ready, _, _ = select.select([proc.stdout], [], [], timeout)
    return proc.stdout.readline() if ready else ""


class Consumer:
    """`python -m fw.lab.nfqueue` running in the lab's firewall namespace (started by `spawn`, so
    the lab's `down` ends it too)."""

    def __init__(self, lab: labns.LabHandle, *args: str) -> None:
        self.lab = lab
        self.proc = lab.spawn(
            lab.topology.firewall.host,
            [sys.executable, "-m", "fw.lab.nfqueue", *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = read_line(self.proc, timeout=10)
        if not line:
            self.proc.kill()
            _, err = self.proc.communicate(timeout=5)
            raise AssertionError(f"consumer did not start: {err[-2000:]}")
        self.ready = json.loads(line)
        assert self.ready["ready"] is True

    def kill(self) -> None:
        """SIGKILL, as a crash: no unbind, no goodbye. Waits until the process is gone."""
        self.proc.kill()
        self.proc.communicate(timeout=5)
        # the kernel unbinds the queue when the netlink socket is released
        deadline = time.monotonic() + 2
        while (
            time.monotonic() < deadline
            and self.lab.run(
                self.lab.topology.firewall.host, ["cat", "/proc/net/netfilter/nfnetlink_queue"]
            ).stdout.strip()
        ):
            time.sleep(0.05)

    def stop(self) -> dict:
        """SIGTERM and the consumer's final counters."""
        self.lab.stop(self.proc, grace=3)
        out, _ = self.proc.communicate(timeout=5)
        lines = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
        return lines[-1] if lines else {}


def started_processes(make: Callable[..., Any]) -> Iterator[Callable[..., Any]]:
    """A fixture body: `make(...)` objects with a `.proc`, each killed (by PID) at the end."""
    started: list[Any] = []

    def start(*args: Any, **kwargs: Any) -> Any:
        started.append(make(*args, **kwargs))
        return started[-1]

    yield start
    for item in started:
        if item.proc.poll() is None:
            item.proc.kill()
            item.proc.communicate(timeout=5)


@pytest.fixture
def consumer() -> Iterator[Callable[..., Consumer]]:
    yield from started_processes(Consumer)


# -- labs run by the `fwlab` command (engine daemon and all) ------------------------------------

RULES = HERE.parent.parent / "rules"
TEST_RULES = HERE / "rules"
FWLAB = [sys.executable, "-m", "fw"]


def fwlab(*args: str, timeout: float = 30, check: bool = False) -> subprocess.CompletedProcess:
    """Run the `fwlab` command (bounded); output captured as text."""
    return subprocess.run(
        [*FWLAB, *args], capture_output=True, text=True, timeout=timeout, check=check
    )


class CliLab:
    """A lab brought up with `fwlab up` (so with its engine daemon), torn down with `fwlab down`."""

    def __init__(self, name: str, up: subprocess.CompletedProcess) -> None:
        self.name = name
        self.up_result = up
        self.handle = labns.attach(name)

    def cli(self, command: str, *args: str, timeout: float = 30) -> subprocess.CompletedProcess:
        return fwlab(command, "--name", self.name, *args, timeout=timeout)

    def status(self) -> dict:
        res = self.cli("status", "--json")
        assert res.returncode == 0, res.stderr
        return json.loads(res.stdout)

    def daemon_pid(self) -> int:
        return int(self.status()["daemon"]["pid"])

    def supervisor(self) -> dict:
        """What the supervisor wrote: its pid, the daemon's pid, restarts, the last exit."""
        return json.loads(runtime.supervisor_path(self.name).read_text())

    def kill_supervisor(self) -> None:
        """SIGKILL the lab's supervisor (a process this test's lab started, by PID); its daemon
        dies with it. Waits until both are gone."""
        sup = self.supervisor()
        os.kill(sup["supervisor_pid"], signal.SIGKILL)
        wait_until(lambda: not runtime.same_process(sup["daemon_pid"], sup["daemon_start"]))

    def run(self, host: str, argv: list[str], timeout: float = 10) -> subprocess.CompletedProcess:
        return self.handle.run(host, argv, timeout=timeout)

    def log_events(self) -> list[dict]:
        time.sleep(1.2)  # the daemon flushes its log at least once a second
        res = self.cli("logs", "--json", "-n", "10000")
        assert res.returncode == 0, res.stderr
        return [json.loads(line) for line in res.stdout.splitlines() if line.strip()]


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> float:
    """Poll `condition` until true; the seconds it took. AssertionError after `timeout`."""
    t0 = time.monotonic()
    while not condition():
        assert time.monotonic() - t0 < timeout, f"not true within {timeout} s"
        time.sleep(0.05)
    return time.monotonic() - t0


@pytest.fixture
def cli_lab() -> Iterator[Callable[..., CliLab]]:
    """make(*up_args, name=None) -> CliLab, via `fwlab up --name <unique> *up_args`. Every lab is
    removed with `fwlab down` afterwards, and the fixture checks that its namespaces, runtime
    directory and daemon are gone."""
    made: list[tuple[str, list[int]]] = []

    def make(*up_args: str, name: str | None = None) -> CliLab:
        name = name or new_lab_name()
        pids: list[int] = []
        made.append((name, pids))
        res = fwlab("up", "--name", name, *up_args, timeout=30)
        assert res.returncode == 0, f"fwlab up failed: {res.stdout}\n{res.stderr}"
        lab = CliLab(name, res)
        pids.extend([lab.daemon_pid(), lab.supervisor()["supervisor_pid"]])
        return lab

    yield make
    errors = []
    for name, pids in made:
        res = fwlab("down", "--name", name, timeout=30)
        if res.returncode != 0:
            errors.append(f"{name}: fwlab down: {res.stderr.strip()}")
        if labns.lab_namespaces(name):
            errors.append(f"{name}: namespaces left: {labns.lab_namespaces(name)}")
        if (labns.RUN_DIR / name).exists():
            errors.append(f"{name}: runtime directory left")
        errors += [f"{name}: process {pid} still running" for pid in pids
                   if runtime.pid_alive(pid)]
    assert not errors, "; ".join(errors)


_LISTEN = r"""
import socket, sys, threading, time
proto, addr, port, life = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
def say(*a):
    print(*a, flush=True)
def serve_tcp(c, peer):
    c.settimeout(life)
    try:
        f = c.makefile("rwb", buffering=0)
        for line in f:
            f.write(b"echo:" + line)
    except OSError:
        pass
    c.close()
if proto == "tcp":
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((addr, port)); s.listen(16)
else:
    s = socket.socket(fam, socket.SOCK_DGRAM); s.bind((addr, port))
s.settimeout(0.2)
say("listening")
end = time.monotonic() + life
while time.monotonic() < end:
    try:
        if proto == "tcp":
            c, peer = s.accept()
            say("conn", peer[0], peer[1])
            threading.Thread(target=serve_tcp, args=(c, peer), daemon=True).start()
        else:
            data, peer = s.recvfrom(2048)
            say("dgram", peer[0], peer[1])
            s.sendto(b"echo:" + data, peer)
    except (TimeoutError, OSError):
        pass
"""

_TALK = r"""
import socket, sys
proto, addr, port, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
sport = int(sys.argv[5]) if len(sys.argv) > 5 else 0
fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
s = socket.socket(fam, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
s.settimeout(timeout)
if sport:
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("::" if fam == socket.AF_INET6 else "0.0.0.0", sport))
try:
    s.connect((addr, port))
    s.send(b"hello\n")
    print(s.recv(1024).decode().strip())
except OSError as e:
    print("error", type(e).__name__); sys.exit(1)
"""


class Listener:
    """A TCP (line echo) or UDP (datagram echo) server in one host; records who reached it.
    Bounded: it exits by itself after `life` seconds."""

    def __init__(self, lab: CliLab, host: str, proto: str, addr: str, port: int, life: float = 20):
        self.proc = lab.handle.exec(
            host,
            [sys.executable, "-c", _LISTEN, proto, addr, str(port), str(life)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        line = read_line(self.proc, timeout=5)
        assert line.strip() == "listening", f"listener did not start: {line!r}"

    def peers(self) -> list[tuple[str, str, int]]:
        """Stop it and return what reached it: [("conn"|"dgram", address, port)]."""
        self.proc.kill()
        out, _ = self.proc.communicate(timeout=5)
        rows = [line.split() for line in out.splitlines()]
        return [(r[0], r[1], int(r[2])) for r in rows if len(r) == 3]


@pytest.fixture
def listener() -> Iterator[Callable[..., Listener]]:
    yield from started_processes(Listener)


def talk(
    lab: CliLab, host: str, proto: str, addr: str, port: int, timeout: float = 2.0, sport: int = 0
) -> str:
    """Send 'hello' from `host` and return the answer ('echo:hello'), or 'error <Exception>'."""
    argv = [sys.executable, "-c", _TALK, proto, addr, str(port), str(timeout)]
    if sport:
        argv.append(str(sport))
    return lab.run(host, argv, timeout=timeout + 5).stdout.strip()
