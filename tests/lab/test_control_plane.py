"""The control plane holds up: the daemon comes back by itself after a kill, one command at a time
changes a lab, a reload that cannot be read in time changes nothing, `status` says busy or dead.

The first tests need no root; the `lab` ones bring labs up with the fwlab command (the `cli_lab`
fixture removes them and checks that nothing is left)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from fw.errors import RulesError
from fw.lab import rulestore, runtime
from fw.lab.lablock import LabBusy, lab_lock
from fw.lab.topology import load_topology

from .conftest import FWLAB, RULES, TEST_RULES, new_lab_name, ping, wait_until

CLIENT, SERVER, ATTACKER = "192.0.2.2", "203.0.113.10", "203.0.113.66"
DEFAULT_YAML = Path(__file__).resolve().parents[2] / "netns" / "default.yaml"
_THREE_FLOWS = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
for port in (1001, 1002, 1003):
    s.sendto(b"x", (sys.argv[1], port))
"""


def fifo_include(tmp_path: Path) -> Path:
    """A rule file that includes a FIFO nobody writes to: reading it never ends."""
    fifo = tmp_path / "pipe.fw"
    os.mkfifo(fifo)
    rules = tmp_path / "hangs.fw"
    rules.write_text(f'mode stateless\npolicy forward accept\ninclude "{fifo}"\n')
    return rules


# -- no root ------------------------------------------------------------------------------------


def test_the_lab_lock_lets_one_command_in(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(runtime, "RUN_DIR", tmp_path)
    with lab_lock("x", "up"):
        with pytest.raises(LabBusy) as busy, lab_lock("x", "down", timeout=0.2):
            pass
        assert str(busy.value) == (
            f"lab 'x' is being built (fwlab up, pid {os.getpid()}); try again when it is done"
        )
    with lab_lock("x", "down", timeout=0.2):
        pass
    assert not (tmp_path / "x").exists()  # a lock for a lab that does not exist leaves nothing


def test_a_waiter_starts_over_when_down_removed_the_lock(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(runtime, "RUN_DIR", tmp_path)
    got: list[str] = []
    with lab_lock("x", "down"):
        (tmp_path / "x" / "lab.json").write_text("{}")
        waiter = threading.Thread(target=lambda: _hold(got))
        waiter.start()
        time.sleep(0.2)
        for p in (tmp_path / "x").iterdir():  # what `down` does with the lab's directory
            p.unlink()
        assert got == []
    waiter.join(timeout=5)
    assert got == ["held"] and not (tmp_path / "x").exists()


def _hold(got: list[str]) -> None:
    with lab_lock("x", "up", timeout=5):
        got.append("held")


def test_compiling_rules_has_a_deadline(tmp_path: Path, monkeypatch) -> None:
    with pytest.raises(RulesError, match="FIFO"):  # refused before it is opened (userfiles.py)
        rulestore.compile_rules(fifo_include(tmp_path))
    with pytest.raises(RulesError):
        rulestore.compile_rules(TEST_RULES / "bad.fw")
    stored = rulestore.StoredRules("x.fw", rulestore.compile_rules(RULES / "stateful-web.fw"))
    assert rulestore.decode(rulestore.encode(stored)) == stored
    # whatever else makes reading or compiling hang (a slow network file system, a bug) meets
    # the deadline
    monkeypatch.setattr("fw.lab.engine_glue.load_rules", lambda path: time.sleep(30))
    t0 = time.monotonic()
    with pytest.raises(rulestore.RulesTimeout, match=r"took longer than 0\.5 s"):
        rulestore.compile_rules(RULES / "stateful-web.fw", seconds=0.5)
    assert time.monotonic() - t0 < 5


def test_conntrack_max_in_the_topology(tmp_path: Path) -> None:
    assert load_topology(str(DEFAULT_YAML)).conntrack_max == 262_144
    path = tmp_path / "t.yaml"
    path.write_text(_topology_with(conntrack_max=5))
    assert load_topology(str(path)).conntrack_max == 5


def _topology_with(**firewall: object) -> str:
    """The default topology with extra keys for the firewall (and its rule file made absolute)."""
    text = DEFAULT_YAML.read_text().replace("../rules/", f"{RULES}/")
    extra = "".join(f"  {k}: {v}\n" for k, v in firewall.items())
    return text.replace("firewall:\n", "firewall:\n" + extra, 1)


# -- real labs ------------------------------------------------------------------------------------


@pytest.mark.lab
def test_the_supervisor_restarts_a_killed_daemon(cli_lab, listener) -> None:
    lab = cli_lab("--conntrack-max", "1000")
    server = listener(lab, "server", "tcp", SERVER, 8080, life=60)  # a lab process: left alone
    old = lab.supervisor()
    assert ping(lab, "client", SERVER)
    os.kill(old["daemon_pid"], signal.SIGKILL)  # the daemon this test's lab started
    wait_until(lambda: ping(lab, "client", SERVER), timeout=10)  # traffic resumes by itself
    st = lab.status()
    new = st["supervisor"]
    assert new["restarts"] == 1 and new["last_exit"] == "killed by SIGKILL"
    assert new["supervisor_pid"] == old["supervisor_pid"] and new["running"]
    assert st["daemon"]["pid"] not in (old["daemon_pid"], None)
    assert st["daemon"]["engine"]["conntrack"]["limit"] == 1000  # the same options
    assert "restarts 1 (last" in lab.cli("status").stdout
    assert "restart" in [e["event"] for e in lab.log_events()]
    assert server.proc.poll() is None


@pytest.mark.lab
def test_restart_by_hand_and_status_of_a_dead_daemon(cli_lab) -> None:
    lab = cli_lab()
    reloaded = lab.cli("reload", str(RULES / "stateless-web.fw"))
    assert reloaded.returncode == 0, reloaded.stderr
    lab.kill_supervisor()  # its daemon dies with it: nothing restarts it now
    text = lab.cli("status")
    assert text.returncode == 1 and "engine daemon: not running" in text.stdout
    as_json = lab.cli("status", "--json")
    assert as_json.returncode == 1  # as the text form
    assert json.loads(as_json.stdout)["daemon"]["state"] == "dead"
    restarted = lab.cli("restart")
    assert restarted.returncode == 0, restarted.stderr
    assert "engine daemon restarted" in restarted.stdout
    st = lab.status()
    assert st["daemon"]["state"] == "running" and st["supervisor"]["restarts"] == 1
    assert st["daemon"]["mode"] == "stateless"  # the rules it ran before, not the topology's
    by_signal = lab.cli("restart")  # with a supervisor running: it restarts the daemon
    assert by_signal.returncode == 0, by_signal.stderr
    assert lab.status()["supervisor"]["restarts"] == 2


@pytest.mark.lab
def test_a_stopped_daemon_is_busy_and_a_late_reload_is_never_applied(cli_lab) -> None:
    lab = cli_lab()
    pid = lab.daemon_pid()
    os.kill(pid, signal.SIGSTOP)  # the daemon this test's lab started: alive, not answering
    try:
        st = lab.cli("status", "--json")
        assert st.returncode == 1 and json.loads(st.stdout)["daemon"]["state"] == "busy"
        assert "engine daemon: busy" in lab.cli("status").stdout
        late = lab.cli("reload", str(RULES / "stateless-web.fw"), "--timeout", "3")
        assert late.returncode == 2 and "the old rules stay" in late.stderr, late.stderr
    finally:
        os.kill(pid, signal.SIGCONT)
    for _ in range(40):  # the daemon now reads the reload it was sent, after its deadline
        if "reload-refused" in [e["event"] for e in lab.log_events()]:
            break
        time.sleep(0.25)
    st = lab.status()["daemon"]
    assert st["pid"] == pid and st["mode"] == "stateful" and st["daemon"]["reloads"] == 0
    assert "reload-refused" in [e["event"] for e in lab.log_events()]


@pytest.mark.lab
def test_two_ups_of_one_name_at_once(cli_lab) -> None:
    name = new_lab_name()
    argv = [*FWLAB, "up", "--name", name]
    procs = [subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    results = [(p.wait(timeout=90), *p.communicate(timeout=5)) for p in procs]
    lab = cli_lab(name=name)  # a third `up`: already up (and the fixture removes it)
    assert "already up" in lab.up_result.stdout
    built = [r for r in results if r[0] == 0 and "is up" in r[1]]
    assert len(built) == 1, results
    for code, _out, err in results:
        assert code == 0 or (code == 2 and f"lab '{name}' is being built" in err), results
    state = json.loads(runtime.state_path(name).read_text())
    assert [p["argv"][3] for p in state["processes"]] == ["supervise"]
    assert ping(lab, "client", SERVER) and lab.status()["daemon"]["state"] == "running"


@pytest.mark.lab
def test_a_reload_that_cannot_be_read_changes_nothing(cli_lab, tmp_path: Path) -> None:
    lab = cli_lab()
    before = lab.status()["daemon"]
    t0 = time.monotonic()
    res = lab.cli("reload", str(fifo_include(tmp_path)), "--timeout", "2")
    took = time.monotonic() - t0
    assert res.returncode == 2 and "FIFO" in res.stderr, res.stderr
    assert "the old rules stay" in res.stderr and "Traceback" not in res.stderr
    assert took < 20  # bounded by its deadline (plus the command's own start)
    after = lab.status()["daemon"]
    assert after["state"] == "running" and after["pid"] == before["pid"]
    assert after["rules"] == before["rules"] and after["daemon"]["reloads"] == 0
    good = lab.cli("reload", str(RULES / "stateless-web.fw"), "--json")
    assert good.returncode == 0 and json.loads(good.stdout)["applied"] is True


@pytest.mark.lab
def test_conntrack_max_reaches_the_engine(cli_lab, tmp_path: Path) -> None:
    flag = cli_lab("--conntrack-max", "2", "--rules", str(TEST_RULES / "open.fw"))
    assert flag.status()["daemon"]["engine"]["conntrack"]["limit"] == 2
    flag.run("client", [sys.executable, "-c", _THREE_FLOWS, SERVER])  # room for two
    time.sleep(0.3)
    assert flag.status()["daemon"]["engine"]["conntrack"]["entries"] <= 2
    topo = tmp_path / "small.yaml"
    topo.write_text(_topology_with(conntrack_max=7))
    from_file = cli_lab(str(topo))
    assert from_file.status()["daemon"]["engine"]["conntrack"]["limit"] == 7


@pytest.mark.lab
def test_the_lab_web_server_says_when_it_stops(lab) -> None:
    argv = [sys.executable, "-m", "fw.lab.webserver", "--port", "8081", "--bind", SERVER,
            "--seconds", "0.5"]
    res = lab.run("server", argv, timeout=20)
    assert res.returncode == 0, res.stderr
    first, last = res.stdout.splitlines()
    assert first == f"listening on {SERVER} port 8081; stops by itself after 0.5 s " \
        "(--seconds N to change, 0: never)"
    assert last.startswith("stopped after 0.5 s")
