"""A bounded SYN flood against a running lab, and what it did to the traffic that was there.

Why it exists: issue 15 asks that an established flow and new connections keep working while the
outside floods the firewall with connection openers (docs/lab.md, "Floods"). One experiment,
used by `scripts/bench_flood.py` (20 s, figures for docs/benchmarks.md) and by the lab test
(10 s, loose asserts):

- `server` runs an iperf3 server and the lab's web server;
- `client` sends one iperf3 TCP flow at a fixed rate (20 Mbit/s) to the server for the whole
  experiment, and fetches the web page with curl again and again while the flood runs;
- `attacker` floods the inside (`client`) with TCP SYNs to ever new ports, as fast as it can:
  hping3 (`--flood -S -p ++1`, what scripts/setup installs) or, without it, the sender below;
- `client` counts the flood packets that reach it (tcpdump; the rules drop them all).

Everything is bounded: the flood by time and count, every process by a timeout; all are started
with `LabHandle.spawn` (so `fwlab down` ends whatever is left) or `run` with a timeout.

    python -m fw.lab.flood send --dst ADDR [--seconds S] [--count N] [--proto syn|tcp|udp]
                                [--port P] [--rate PPS]

is the project's own SYN sender (raw socket, prebuilt packets), for machines without hping3.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from fw import craft
from fw.lab import netns as labns

__all__ = ["experiment", "send_syns", "summary"]

FLOOD_COUNT = 10_000_000  # packets: the flood stops at this or its time, whichever comes first
IPERF_PORT = 5201
DEVNULL = subprocess.DEVNULL
WEB_PORT = 80


# -- the project's own sender ------------------------------------------------------------------


def send_syns(
    dst: str, seconds: float, count: int, *, proto: str = "syn", port: int = 5201,
    rate: float | None = None,
) -> int:
    """As fast as one raw socket goes (or `rate` a second), until `seconds` or `count`:
    - proto "syn": TCP SYNs to `dst`, destination ports 1..65535 in turn (a SYN flood);
    - "tcp" / "udp": SYNs / datagrams to `port` from source ports 1..65535 in turn: each a new
      flow for a firewall that lets them through (the memory benchmark fills its table so).
    Packets are built beforehand (a port's packet once), so the loop is one sendto each.
    Returns how many were sent."""
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_RAW, socket.IPPROTO_RAW)
    src = _source_for(dst)
    build = {"syn": lambda p: craft.tcp(src, dst, 40000, p, "S", seq=p),
             "tcp": lambda p: craft.tcp(src, dst, p, port, "S", seq=p),
             "udp": lambda p: craft.udp(src, dst, p, port, payload=b"fwlab")}[proto]
    packets = [build(p) for p in range(1, 65536)]
    start, sent = time.monotonic(), 0
    while sent < count and time.monotonic() < start + seconds:
        for packet in packets[: min(1024, count - sent)]:
            try:
                sock.sendto(packet, (dst, 0))
            except OSError:
                time.sleep(0.0005)  # a full device queue: let it drain
            sent += 1
        packets = packets[1024:] + packets[:1024]
        if rate and (ahead := sent / rate - (time.monotonic() - start)) > 0:
            time.sleep(ahead)
    return sent


def _source_for(dst: str) -> str:
    """The address this namespace sends from towards `dst` (a connected UDP socket knows)."""
    family = socket.AF_INET6 if ":" in dst else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        probe.connect((dst, 9))
        return probe.getsockname()[0]


# -- the experiment ------------------------------------------------------------------------------


def experiment(
    lab: str,
    *,
    flood_seconds: float = 20.0,
    before: float = 3.0,
    after: float = 2.0,
    mbit: float = 20.0,
    sender: str | None = None,
    workdir: Path,
) -> dict[str, Any]:
    """Run the flood once against lab `lab` (the default topology: client, server, attacker)
    and return what happened (see `summary` for the figures)."""
    handle = labns.attach(lab)
    server = _address(handle, "server")
    target = _address(handle, "client")
    sender = sender or ("hping3" if shutil.which("hping3") else "python")
    total = before + flood_seconds + after
    iperf_json = workdir / "iperf-server.json"
    procs = _servers(handle, server, iperf_json, total)
    try:
        _wait_listening(handle, "server", IPERF_PORT)
        _wait_listening(handle, "server", WEB_PORT)
        flow = handle.spawn("client", ["timeout", str(total + 15), "iperf3", "-c", server,
                                       "-p", str(IPERF_PORT), "-b", f"{mbit:g}M",
                                       "-t", f"{total:g}", "-i", "1"],
                            stdout=DEVNULL, stderr=DEVNULL)
        procs.append(flow)
        time.sleep(before)
        t0 = time.monotonic()
        watch = _watch_inside(handle, workdir, flood_seconds + 2)
        procs.append(watch)
        flood = _flood(handle, sender, target, flood_seconds, workdir)
        procs.append(flood)
        curls = _curl_loop(handle, server, t0 + flood_seconds)
        sent = _flood_sent(flood, sender, workdir, flood_seconds)
        flow.wait(timeout=after + 20)
        procs[0].wait(timeout=20)
        watch.wait(timeout=10)
    finally:
        for proc in procs:
            handle.stop(proc)  # a finished one is only forgotten (its PID may be reused)
    seconds = _per_second(iperf_json, before, flood_seconds)
    return {"sender": sender, "flood_seconds": flood_seconds, "flood_sent": sent,
            "mbit_target": mbit, "mbit_per_second": seconds, "curl": curls,
            "reached_inside": _reached_inside(workdir)}


def _address(handle: Any, host: str) -> str:
    spec = handle.topology.hosts[host]
    return next(str(a.ip) for i in spec.interfaces.values() for a in i.addresses
                if a.ip.version == 4)


def _servers(handle: Any, server: str, iperf_json: Path, total: float) -> list[Any]:
    limit = str(total + 30)
    with iperf_json.open("wb") as out:
        iperf = handle.spawn("server", ["timeout", limit, "iperf3", "-s", "-1", "-J", "-B",
                                        server, "-p", str(IPERF_PORT)], stdout=out, stderr=DEVNULL)
    web = handle.spawn("server", ["timeout", limit, sys.executable, "-m", "fw.lab.webserver",
                                  "--bind", server, "--port", str(WEB_PORT),
                                  "--seconds", str(int(total + 20))],
                       stdout=DEVNULL, stderr=DEVNULL)
    return [iperf, web]


def _wait_listening(handle: Any, host: str, port: int, timeout: float = 5.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        res = handle.run(host, ["ss", "-Hltn", f"sport = :{port}"], timeout=5)
        if res.stdout.strip():
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on {host} port {port}")


def _watch_inside(handle: Any, workdir: Path, seconds: float) -> Any:
    """tcpdump on the client: every packet from the attacker that got through (bounded; in
    immediate mode, so that none still waits in libpcap's ring when the time is up)."""
    attacker = _address(handle, "attacker")
    with (workdir / "tcpdump.err").open("wb") as err:
        return handle.spawn("client", ["timeout", f"{seconds:g}", "tcpdump", "-i", "eth0", "-n",
                                       "--immediate-mode", "-c", "100000", "-w", "/dev/null",
                                       "src", "host", attacker], stdout=DEVNULL, stderr=err)


def _reached_inside(workdir: Path) -> int | None:
    text = (workdir / "tcpdump.err").read_text(errors="replace")
    found = re.search(r"(\d+) packets? captured", text)
    return int(found.group(1)) if found else None


def _flood(handle: Any, sender: str, target: str, seconds: float, workdir: Path) -> Any:
    if sender == "hping3":
        argv = ["timeout", f"{seconds:g}", "hping3", "--flood", "-S", "-p", "++1",
                "-c", str(FLOOD_COUNT), target]
    else:
        argv = ["timeout", f"{seconds + 5:g}", sys.executable, "-m", "fw.lab.flood", "send",
                "--dst", target, "--seconds", f"{seconds:g}", "--count", str(FLOOD_COUNT)]
    with (workdir / "flood.out").open("wb") as out:
        return handle.spawn("attacker", argv, stdout=out, stderr=out)


def _flood_sent(flood: Any, sender: str, workdir: Path, seconds: float) -> int | None:
    flood.wait(timeout=seconds + 15)
    text = (workdir / "flood.out").read_text(errors="replace")
    pattern = r"(\d+) packets transmitted" if sender == "hping3" else r'"sent": (\d+)'
    found = re.search(pattern, text)
    return int(found.group(1)) if found else None


def _curl_loop(handle: Any, server: str, until: float, pause: float = 0.1) -> list[list]:
    """curl the server's page until `until`: [ok, seconds] per try (timeout 5 s each)."""
    out = []
    while time.monotonic() < until:
        res = handle.run("client", ["curl", "-s", "-o", "/dev/null", "-m", "5", "-w",
                                    "%{http_code} %{time_total}", f"http://{server}/"],
                         timeout=10)
        code, _, took = res.stdout.partition(" ")
        out.append([res.returncode == 0 and code == "200", float(took or 0)])
        time.sleep(pause)
    return out


def _per_second(iperf_json: Path, before: float, flood_seconds: float) -> list[float]:
    """Mbit/s received by the server in each whole second of the flood."""
    try:
        intervals = json.loads(iperf_json.read_text())["intervals"]
    except (OSError, ValueError, KeyError):
        return []
    out = []
    for interval in intervals:
        s = interval["sum"]
        if s["start"] >= before - 0.01 and s["end"] <= before + flood_seconds + 0.5:
            out.append(round(s["bits_per_second"] / 1e6, 2))
    return out


def summary(result: dict[str, Any]) -> dict[str, Any]:
    """The figures: flood rate, the flow's slowest second, curl's success and latency."""
    per_second = result["mbit_per_second"]
    tries = result["curl"]
    times = sorted(t for ok, t in tries if ok)
    sent = result["flood_sent"]
    return {
        "flood_pps": round(sent / result["flood_seconds"]) if sent else None,
        "seconds": len(per_second),
        "min_mbit": min(per_second) if per_second else None,
        "seconds_below_half": sum(1 for m in per_second if m < result["mbit_target"] / 2),
        "curl_tries": len(tries),
        "curl_ok": sum(1 for ok, _ in tries if ok),
        "curl_success": round(sum(1 for ok, _ in tries if ok) / len(tries), 3) if tries else None,
        "curl_median_s": round(statistics.median(times), 3) if times else None,
        "curl_max_s": round(times[-1], 3) if times else None,
        "reached_inside": result["reached_inside"],
    }


# -- command line ------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m fw.lab.flood",
                                 description="A bounded TCP SYN flood (raw socket).")
    sub = ap.add_subparsers(dest="command", required=True)
    send = sub.add_parser("send")
    send.add_argument("--dst", required=True)
    send.add_argument("--seconds", type=float, default=10.0)
    send.add_argument("--count", type=int, default=1_000_000)
    send.add_argument("--proto", choices=("syn", "tcp", "udp"), default="syn",
                      help="syn: SYNs to every port; tcp, udp: to --port from every port")
    send.add_argument("--port", type=int, default=5201)
    send.add_argument("--rate", type=float, help="packets a second (default: as fast as it can)")
    args = ap.parse_args(argv)
    sent = send_syns(args.dst, min(args.seconds, 600.0), min(args.count, FLOOD_COUNT),
                     proto=args.proto, port=args.port, rate=args.rate)
    print(json.dumps({"sent": sent}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
