"""`fwlab up --engine kernel`: the same lab and commands, the exported rules running in the
firewall namespace's nftables; and `fwlab exposure --live --engine kernel`.

Each lab is brought up with `fwlab up --engine kernel` and removed with `fwlab down`; the fixture
then checks that no namespace or runtime directory of it is left."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fw.lab import netns as labns

from .conftest import RULES, fwlab, new_lab_name

ROOT = Path(__file__).resolve().parents[2]
REFUSED = ROOT / "tests/golden/export-refused/mapping-address-dependent.fw"


def gone(name: str) -> list[str]:
    """What is left of lab `name` ([] when nothing)."""
    left = [f"namespace {ns}" for ns in labns.lab_namespaces(name)]
    return left + ([f"{labns.RUN_DIR / name}"] if (labns.RUN_DIR / name).exists() else [])


@pytest.fixture
def kernel_lab() -> Iterator[Callable[..., str]]:
    """make(*up_args) -> the name of a lab up with the kernel engine; all removed afterwards."""
    made: list[str] = []

    def make(*up_args: str) -> str:
        name = new_lab_name()
        made.append(name)
        res = fwlab("up", "--name", name, "--engine", "kernel", *up_args, timeout=30)
        assert res.returncode == 0, res.stdout + res.stderr
        return name

    yield make
    errors = []
    for name in made:
        res = fwlab("down", "--name", name, timeout=30)
        errors += [f"{name}: fwlab down: {res.stderr}"] if res.returncode else []
        errors += [f"{name}: {what} left" for what in gone(name)]
    assert not errors, "; ".join(errors)


def status(name: str) -> dict:
    res = fwlab("status", "--name", name, "--json")
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads(res.stdout)


def hits(name: str) -> dict[int, int]:
    """Forward rule hits by rule file line, from nft's counters."""
    forward = status(name)["kernel"]["engine_status"]["chains"]["forward"]
    return {rule["line"]: rule["hits"] for rule in forward["rules"]}


def curl(name: str) -> str:
    """The lab web server's greeting to the client; retried while the server starts (bounded)."""
    for _ in range(20):
        res = fwlab("exec", "--name", name, "client", "--", "curl", "-s", "-m", "3",
                    "http://203.0.113.10/")
        if res.returncode == 0 and res.stdout:
            return res.stdout
        time.sleep(0.25)
    raise AssertionError(f"curl never got an answer: {res.stderr}")


def rows(name: str, command: str) -> list[dict]:
    res = fwlab(command, "--name", name, "--json")
    assert res.returncode == 0, res.stderr
    return json.loads(res.stdout)


@pytest.mark.lab
def test_the_kernel_runs_the_lab_and_the_commands_read_it(kernel_lab, tmp_path: Path) -> None:
    name = kernel_lab()  # the default lab: rules/stateful-web.fw, with masquerade
    assert fwlab("up", "--name", name, "--engine", "kernel").stdout.count("already up") == 1
    st = status(name)
    assert st["engine"] == "kernel" and st["daemon"] is None
    assert st["kernel"]["ok"] and st["kernel"]["mode"] == "stateful"
    before = hits(name)
    server = fwlab("exec", "--name", name, "-d", "server", "--", sys.executable, "-m",
                   "fw.lab.webserver", "--seconds", "60")
    assert server.returncode == 0, server.stderr

    assert "you came from 203.0.113.1 " in curl(name)  # masqueraded by the kernel
    ping = labns.attach(name).run("client", ["ping", "-n", "-c", "2", "-i", "0.2", "-W", "2",
                                             "203.0.113.10"], timeout=10)
    assert ping.returncode == 0, ping.stdout

    after = hits(name)  # line 12 established, 14 "browse", 16 echo-request
    assert after[14] > before[14] and after[16] > before[16] and after[12] > before[12]
    flows = [r for r in rows(name, "conntrack") if r["proto"] == "tcp"]
    assert any(r["orig"].startswith("192.0.2.2:") and r["orig"].endswith("-> 203.0.113.10:80")
               and r["reply"].split(" -> ")[1].startswith("203.0.113.1:") and r["packets"]
               for r in flows), flows
    nat = rows(name, "nat")
    assert any(r["nat"] == "snat" and r["translated"].startswith("203.0.113.1:") for r in nat)
    human = fwlab("status", "--name", name)
    assert human.returncode == 0 and "the kernel (nftables" in human.stdout
    assert '"browse"' in human.stdout and "policy drop" in human.stdout

    logs = fwlab("logs", "--name", name)
    assert logs.returncode == 1 and len(logs.stderr.strip().splitlines()) == 1
    assert "kernel engine has no log" in logs.stderr

    bad = tmp_path / "bad.fw"
    bad.write_text("mode stateful\nforward {\n    tcp dport 80 acept\n}\n")
    refused = fwlab("reload", "--name", name, str(bad))
    assert refused.returncode == 2 and "the old rules stay" in refused.stderr
    assert status(name)["kernel"]["rules"].endswith("stateful-web.fw")
    dmz = tmp_path / "dmz.fw"
    dmz.write_text("mode stateful\npolicy forward drop\nforward {\n    iif dmz accept\n}\n")
    refused = fwlab("reload", "--name", name, str(dmz))  # the lab has no dmz: never matches
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1, refused.stderr
    assert f"{dmz}:4:5: error: interface 'dmz' is not in the lab's topology" in refused.stderr
    assert status(name)["kernel"]["rules"].endswith("stateful-web.fw")

    res = fwlab("reload", "--name", name, str(RULES / "stateless-web.fw"))
    assert res.returncode == 0, res.stderr
    st = status(name)["kernel"]
    assert st["mode"] == "stateless" and st["reloads"] == 1
    assert "you came from 192.0.2.2 " in curl(name)  # no NAT, nothing tracked
    assert not [r for r in rows(name, "conntrack") if r["orig"].endswith(":80")
                and r["state"] != "time_wait"]

    assert fwlab("down", "--name", name).returncode == 0
    assert gone(name) == []


@pytest.mark.lab
def test_what_the_kernel_cannot_run_builds_nothing() -> None:
    name = new_lab_name()
    try:
        res = fwlab("up", "--name", name, "--engine", "kernel", "--rules", str(REFUSED))
        assert res.returncode == 2 and "error: the kernel cannot give 'mapping" in res.stderr
        assert gone(name) == []
        for args, message in ((["--engine", "bsd"], "--engine 'bsd': one of fwlab, kernel"),
                              (["--engine", "kernel", "--fail-open"], "--fail-open is for")):
            res = fwlab("up", "--name", name, *args)
            assert res.returncode == 2 and message in res.stderr and gone(name) == []
    finally:
        fwlab("down", "--name", name)


def exposure(*args: str) -> dict:
    res = subprocess.run([sys.executable, "-m", "fw", "exposure", *args, "--json"], cwd=ROOT,
                         capture_output=True, text=True, timeout=240, check=False)
    assert res.returncode == 0, res.stdout + res.stderr
    return json.loads(res.stdout)


@pytest.mark.lab
def test_the_kernel_exposes_what_fwlab_computes() -> None:
    files = ["rules/stateless-web.fw", "rules/stateful-web.fw"]
    data = exposure(*files, "--live", "--engine", "kernel", "--ports", "32760-32780")
    assert data["differences"] == []
    live = {r["file"]: r["live"] for r in data["rulesets"]}
    for cls in ("tcp_syn", "tcp_any", "udp"):
        assert live["rules/stateless-web.fw"][cls] == {"count": 13, "ranges": ["32768-32780"]}
        assert live["rules/stateful-web.fw"][cls]["count"] == 0
    assert {r["live"]["engine"] for r in data["rulesets"]} == {"kernel"}
    assert not [n for n in labns.list_labs() if n.startswith("exp")]


@pytest.mark.lab
def test_the_kernel_port_forward_is_measured() -> None:
    (ruleset,) = exposure("rules/stateful-web.fw", "--live", "--engine", "kernel", "--ports",
                          "75-85")["rulesets"]
    assert ruleset["live_by_engine"]["kernel"]["tcp_syn"] == {"count": 1, "ranges": ["80"]}
