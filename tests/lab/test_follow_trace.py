"""`fwlab conntrack --follow` and `fwlab trace`: what the engine does, live, for the packets one
cares about, as `conntrack -E` and `nft monitor trace` show it."""

from __future__ import annotations

import json
import select
import signal
import subprocess
import sys
import time

import pytest

from .conftest import FWLAB


def follower(lab, *args: str) -> subprocess.Popen:
    """A following command in the background; returns once it says it follows."""
    proc = subprocess.Popen([*FWLAB, *args, "--name", lab.name], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    ready, _, _ = select.select([proc.stderr], [], [], 15)
    line = proc.stderr.readline() if ready else ""
    assert line.startswith(("following", "tracing")), line
    return proc


def web_server(lab) -> subprocess.Popen:
    return lab.handle.exec("server", [sys.executable, "-m", "fw.lab.webserver", "--seconds", "30"],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.mark.lab
def test_conntrack_events_of_a_page_and_of_a_refused_connection(cli_lab) -> None:
    lab = cli_lab()
    web = web_server(lab)
    try:
        events = follower(lab, "conntrack", "--follow", "--json", "--seconds", "60")
        page = lab.cli("exec", "client", "--", "curl", "-4", "-s", "-m", "5", "--retry", "3",
                       "--retry-connrefused", "http://server/")
        # allowed by the rules, refused by the server: a reset before any reply
        lab.cli("exec", "client", "--", "curl", "-4", "-s", "-m", "3", "http://server:443/")
        time.sleep(1)  # a poll or two
        events.send_signal(signal.SIGINT)  # Ctrl-C: the follower this test started
        out, _ = events.communicate(timeout=10)
    finally:
        web.kill()  # the server this test started, by its Popen handle
        web.communicate(timeout=5)
    assert "you came from" in page.stdout and events.returncode == 0
    rows = [json.loads(line) for line in out.splitlines()]
    first = next(r for r in rows if r["orig"]["dport"] == 80)
    assert (first["event"], first["state"], first["unreplied"]) == ("NEW", "SYN_SENT", True)
    assert first["reply"]["dst"] == "203.0.113.1"  # masqueraded
    assert any(r["state"] == "ESTABLISHED" and r["assured"] for r in rows)
    refused = [r for r in rows if r["orig"]["dport"] == 443]
    assert [(r["event"], r["reason"]) for r in refused][-1] == ("DESTROY", "RST")


@pytest.mark.lab
def test_trace_shows_each_matching_packet_as_explain_does(cli_lab) -> None:
    lab = cli_lab()
    traced = follower(lab, "trace", "tcp dport 22", "--count", "1", "--seconds", "30", "--json")
    lab.cli("exec", "attacker", "--", "curl", "-4", "-s", "-m", "1", "http://client:22/")
    out, err = traced.communicate(timeout=40)
    assert traced.returncode == 0 and "1 packet(s) traced" in err
    (record,) = [json.loads(line) for line in out.splitlines()]
    assert record["packet"].startswith("tcp 203.0.113.66:") and "192.0.2.2:22 flags S" in record[
        "packet"]
    assert (record["verdict"], record["chain"], record["iif"]) == ("drop", "forward", "wan")
    assert record["by"].endswith('counter log prefix "fwd-drop " drop')
    assert [s["matched"] for s in record["trace"]][-1] is True and len(record["trace"]) == 7
    people = lab.cli("trace", "tcp dport 22", "--count", "1", "--seconds", "1")
    assert people.returncode == 0 and "0 packet(s) traced" in people.stderr
    bad = lab.cli("trace", "tcp dprt 22")
    assert bad.returncode == 2 and bad.stderr.startswith("fwlab: trace match 'tcp dprt 22'")
