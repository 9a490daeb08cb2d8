"""`fwlab capture` then `fwlab replay`: what the firewall saw, judged again offline, agrees."""

from __future__ import annotations

import json
import select
import signal
import subprocess
import sys
import time

import pytest

from fw.pcap import read_frames

from .conftest import FWLAB, RULES


def start_capture(lab, *args: str) -> subprocess.Popen:
    """`fwlab capture` in the background; returns once tcpdump listens."""
    proc = subprocess.Popen([*FWLAB, "capture", "--name", lab.name, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.stderr is not None
    ready, _, _ = select.select([proc.stderr], [], [], 15)
    line = proc.stderr.readline() if ready else ""
    assert line.startswith("capturing on"), line
    return proc


@pytest.mark.lab
def test_capture_on_the_firewall_then_replay_it(cli_lab, tmp_path) -> None:
    lab = cli_lab()
    web = lab.handle.exec("server", [sys.executable, "-m", "fw.lab.webserver", "--seconds", "20"],
                          stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        pcap = tmp_path / "capture.pcap"
        cap = start_capture(lab, "fw", "-o", str(pcap), "--seconds", "120")
        page = lab.cli("exec", "client", "--", "curl", "-4", "-s", "-m", "5",
                       "--retry", "3", "--retry-connrefused", "http://server/")
        time.sleep(0.2)  # the last FIN and ACK (tcpdump hands each packet over at once)
        cap.send_signal(signal.SIGINT)  # Ctrl-C, to the capture this test started
        out, err = cap.communicate(timeout=20)
    finally:
        web.kill()  # the server this test started, by its Popen handle
        web.communicate(timeout=5)
    assert "you came from 203.0.113.1" in page.stdout
    assert cap.returncode == 0, err
    assert "from fw any" in out and pcap.stat().st_size > 24
    replay = subprocess.run([*FWLAB, "replay", str(RULES / "stateful-web.fw"), str(pcap),
                             "--json"], capture_output=True, text=True, timeout=60)
    rows = [json.loads(line) for line in replay.stdout.splitlines()]
    web_rows = [r for r in rows if r["packet"].startswith("tcp") and ":80" in r["packet"]
                and "." in r["packet"]]  # the IPv4 conversation with the web server
    assert web_rows and all(r["verdict"] == "accept" for r in web_rows)
    assert web_rows[0]["ct_state"] == "new" and web_rows[0]["nat"][0]["kind"] == "snat"


@pytest.mark.lab
def test_capture_stops_at_count_and_refuses_a_wrong_interface(cli_lab, tmp_path) -> None:
    lab = cli_lab()
    pcap = tmp_path / "ping.pcap"
    cap = start_capture(lab, "client", "-o", str(pcap), "--count", "2", "--seconds", "10")
    lab.cli("exec", "client", "--", "ping", "-c", "3", "-i", "0.2", "-W", "1", "203.0.113.10")
    out, _ = cap.communicate(timeout=20)
    assert cap.returncode == 0 and out.startswith("2 packets from client eth0")
    assert len(list(read_frames(str(pcap)))) == 2
    bad = lab.cli("capture", "client", "-i", "wan", "-o", str(tmp_path / "x.pcap"))
    assert bad.returncode == 2 and "client has no interface 'wan'" in bad.stderr
    assert not (tmp_path / "x.pcap").exists()
