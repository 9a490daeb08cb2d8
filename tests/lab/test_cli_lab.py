"""The lab commands as a user runs them: `fwlab up/down/status/exec/conntrack/nat/reload/logs`.

Errors a user can make are one line and exit 2, never a traceback. After each test the
`cli_lab` fixture checks that no namespace, runtime directory or daemon of the lab is left."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from fw.commands.logs import format_log_event
from fw.lab import netns as labns
from fw.lab.topology import default_topology

from .conftest import RULES, TEST_RULES, fwlab, new_lab_name, read_line

# -- no root ------------------------------------------------------------------------------------


def test_log_lines_for_people() -> None:
    event = {
        "time": 0.5, "event": "drop", "chain": "forward", "iif": "wan", "oif": "lan",
        "ct_state": "new", "prefixes": ["fwd-drop "],
        "packet": {"src": "203.0.113.66", "dst": "192.0.2.2", "proto": "tcp", "sport": 4,
                   "dport": 22, "flags": "syn"},
        "rule": {"file": "rules/x.fw", "line": 18, "text": "log prefix \"fwd-drop \" drop"},
    }
    line = format_log_event(event)
    assert "DROP" in line and "tcp 203.0.113.66:4 -> 192.0.2.2:22 [syn]" in line
    assert "iif wan oif lan" in line and "<- rules/x.fw:18" in line and '"fwd-drop "' in line
    v6 = dict(event, packet={"src": "2001:db8::1", "dst": "2001:db8::2", "proto": "udp",
                             "sport": 1, "dport": 2}, rule=None, reason="policy forward drop")
    assert "udp [2001:db8::1]:1 -> [2001:db8::2]:2" in format_log_event(v6)
    assert format_log_event({"time": 0, "event": "reload", "rules": "a.fw"}).endswith("rules=a.fw")


@pytest.mark.parametrize("command", ["up", "down", "status", "reload x.fw", "exec client true"])
def test_lab_commands_need_root(command: str) -> None:
    res = subprocess.run(
        ["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups", *fwlab_argv(command)],
        capture_output=True, text=True, timeout=30,
    )
    assert res.returncode == 2
    verb = command.split()[0]
    assert res.stderr.strip() == f"fwlab: fwlab {verb} needs root: run it with sudo"


def fwlab_argv(command: str) -> list[str]:
    from .conftest import FWLAB

    return [*FWLAB, *command.split()]


# -- real labs ------------------------------------------------------------------------------------


@pytest.mark.lab
def test_up_twice_status_and_down(cli_lab) -> None:
    lab = cli_lab()
    out = lab.up_result.stdout
    assert f"lab '{lab.name}' is up" in out and "fw (firewall)" in out
    assert "203.0.113.10/24" in out and "curl -m 3 http://203.0.113.10/" in out
    again = fwlab("up", "--name", lab.name)
    assert again.returncode == 0 and "already up" in again.stdout
    st = lab.status()
    assert st["status"] == "up" and st["up_seconds"] > 0  # its time is a benchmark figure
    assert st["hosts"]["client"]["interfaces"]["eth0"] == ["192.0.2.2/24", "2001:db8:1::2/64"]
    daemon = st["daemon"]
    assert daemon["ok"] and daemon["rules"].endswith("rules/stateful-web.fw")
    assert daemon["kernel_queue"]["queue_num"] == 0 and daemon["adapter"]["rcvbuf"] >= 1 << 24
    assert daemon["kernel_queue"]["peer_portid"] > 0
    human = lab.cli("status")
    assert human.returncode == 0
    for text in ("engine daemon: pid", "fail closed", "kernel queue:", "policy drop", "browse"):
        assert text in human.stdout
    assert lab.cli("down").returncode == 0
    assert labns.lab_namespaces(lab.name) == []
    gone = lab.cli("down")
    assert gone.returncode == 0 and "nothing to do" in gone.stdout
    missing = lab.cli("status")
    assert missing.returncode == 2 and "no lab" in missing.stderr


@pytest.mark.lab
def test_exec_passes_the_exit_status_through(cli_lab) -> None:
    lab = cli_lab()
    res = lab.cli("exec", "client", "--", "sh", "-c", "echo hi; exit 7")
    assert res.returncode == 7 and res.stdout == "hi\n"
    ip = lab.cli("exec", "server", "--", "ip", "-brief", "addr", "show", "eth0")
    assert "203.0.113.10/24" in ip.stdout
    bad = lab.cli("exec", "nohost", "--", "true")
    assert bad.returncode == 2 and bad.stderr.strip() == (
        f"fwlab: lab '{lab.name}' has no host 'nohost'"
    )


@pytest.mark.lab
def test_conntrack_nat_and_logs(cli_lab) -> None:
    lab = cli_lab()
    pinged = lab.cli("exec", "client", "--", "ping", "-c", "1", "-W", "1", "203.0.113.10")
    assert pinged.returncode == 0
    lab.cli("exec", "attacker", "--", "ping", "-c", "1", "-W", "1", "192.0.2.2")
    table = lab.cli("conntrack")
    assert table.returncode == 0 and "192.0.2.2 -> 203.0.113.10" in table.stdout
    rows = json.loads(lab.cli("conntrack", "--json").stdout)
    assert rows[0]["proto"] == "icmp" and rows[0]["state"]
    assert lab.cli("nat", "--json").returncode == 0
    logs = lab.cli("logs")
    for _ in range(20):  # the daemon flushes its log at least once a second; a busy one later
        if "DROP" in logs.stdout:
            break
        time.sleep(0.5)
        logs = lab.cli("logs")
    assert "DROP" in logs.stdout and "icmp 203.0.113.66 -> 192.0.2.2" in logs.stdout
    assert '"fwd-drop "' in logs.stdout and "stateful-web.fw:18" in logs.stdout
    follow = subprocess.Popen(
        fwlab_argv(f"logs --name {lab.name} -f -n 0 --json"),
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    try:
        time.sleep(3.0)  # until it follows the end of the log (bounded, not measured)
        lab.cli("exec", "attacker", "--", "ping", "-c", "1", "-W", "1", "192.0.2.2")
        first = read_line(follow, timeout=15)
    finally:
        follow.terminate()
        out, _ = follow.communicate(timeout=5)
    out = first + out
    events = [json.loads(x) for x in out.splitlines()]
    assert [e["event"] for e in events] == ["drop"]


@pytest.mark.lab
def test_bad_rules_build_nothing(tmp_path) -> None:
    name = new_lab_name()
    res = fwlab("up", "--name", name, "--rules", str(TEST_RULES / "bad.fw"))
    assert res.returncode == 2 and "Traceback" not in res.stderr
    assert "bad.fw:5:23: error: port 99999 is out of range" in res.stderr
    assert labns.lab_namespaces(name) == [] and not (labns.RUN_DIR / name).exists()
    missing = fwlab("up", "--name", name, "--rules", str(tmp_path / "nope.fw"))
    assert missing.returncode == 2 and "does not exist" in missing.stderr
    badname = fwlab("up", "--name", "Bad_Name")
    assert badname.returncode == 2 and "lab name" in badname.stderr


@pytest.mark.lab
def test_up_cleans_a_half_built_lab(cli_lab) -> None:
    name = new_lab_name()
    labns.up(default_topology(), name)  # namespaces, no queue, no daemon: as after a crash
    lab = cli_lab("--rules", str(RULES / "stateless-web.fw"), name=name)
    assert "removing it first" in lab.up_result.stderr
    assert lab.status()["daemon"]["mode"] == "stateless"


@pytest.mark.lab
def test_reload_command(cli_lab) -> None:
    lab = cli_lab()
    ok = lab.cli("reload", str(RULES / "stateless-web.fw"))
    assert ok.returncode == 0 and "stateless" in ok.stdout
    bad = lab.cli("reload", str(TEST_RULES / "bad.fw"), "--json")
    answer = json.loads(bad.stdout)
    assert bad.returncode == 2 and answer["ok"] is False and answer["diagnostics"]
    assert lab.status()["daemon"]["mode"] == "stateless"
    nofile = lab.cli("reload", "/nonexistent.fw")
    assert nofile.returncode == 2 and "does not exist" in nofile.stderr


@pytest.mark.lab
def test_rules_naming_interfaces_the_lab_lacks_are_refused_unless_forced(cli_lab, tmp_path) -> None:
    """`iif dmz` in the default lab (lan, wan) would silently never match: `up` and `reload`
    refuse such a file in one line naming where, exit 2; `--force` runs it anyway."""
    dmz = str(tmp_path / "dmz.fw")
    Path(dmz).write_text("mode stateful\npolicy forward drop\nforward {\n"
                         "    ct state established accept\n    iif lan oif dmz accept\n}\n")
    where = f"{dmz}:5:13: error: interface 'dmz' is not in the lab's topology (its firewall " \
            "has lan, wan)"
    name = new_lab_name()
    refused_up = fwlab("up", "--name", name, "--rules", dmz)
    assert refused_up.returncode == 2 and refused_up.stderr.count("\n") == 1, refused_up.stderr
    assert refused_up.stderr.startswith(f"fwlab: {where}") and "--force" in refused_up.stderr
    assert labns.lab_namespaces(name) == [] and not (labns.RUN_DIR / name).exists()
    lab = cli_lab()
    refused = lab.cli("reload", dmz)
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert refused.stderr.startswith(f"fwlab: {where}")
    as_json = lab.cli("reload", dmz, "--json")
    assert as_json.returncode == 2 and where in json.loads(as_json.stdout)["error"]
    assert lab.status()["daemon"]["rules"].endswith("stateful-web.fw")
    forced = lab.cli("reload", dmz, "--force")
    assert forced.returncode == 0, forced.stderr
    assert lab.status()["daemon"]["rules"].endswith("dmz.fw")
    forced_up = cli_lab("--rules", dmz, "--force")
    assert forced_up.status()["daemon"]["rules"].endswith("dmz.fw")
