"""`fwlab list`: the labs that are up; a command aimed at a lab that is not up names the others."""

from __future__ import annotations

import json
import subprocess

import pytest

from .conftest import FWLAB, RULES, fwlab, new_lab_name


@pytest.mark.lab
def test_list_shows_every_lab_and_status_names_them(cli_lab) -> None:
    first, second = cli_lab(), cli_lab("--rules", str(RULES / "stateless-web.fw"))
    rows = {row["name"]: row for row in json.loads(fwlab("list", "--json").stdout)}
    for lab, mode in ((first, "stateful"), (second, "stateless")):
        row = rows[lab.name]  # other people's labs may be listed too
        assert row["status"] == "up" and row["mode"] == mode and row["engine"] == "fwlab"
        assert row["daemon"]["running"] and row["daemon"]["pid"] == lab.daemon_pid()
        assert row["uptime"] >= 0 and row["rules"].endswith(f"rules/{mode}-web.fw")
    table = fwlab("list")
    assert table.returncode == 0 and first.name in table.stdout and "running" in table.stdout
    missing = fwlab("status", "--name", new_lab_name())
    assert missing.returncode == 2 and "labs up:" in missing.stderr
    assert first.name in missing.stderr and second.name in missing.stderr
    second.cli("down")
    assert second.name not in {row["name"] for row in json.loads(fwlab("list", "--json").stdout)}


@pytest.mark.parametrize("command", ["list", "capture fw -o x.pcap", "trace tcp",
                                     "conntrack --follow"])
def test_the_new_lab_commands_need_root(command: str) -> None:
    res = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                          *FWLAB, *command.split()], capture_output=True, text=True, timeout=30)
    verb = command.split()[0]
    assert res.returncode == 2
    assert res.stderr.strip() == f"fwlab: fwlab {verb} needs root: run it with sudo"
