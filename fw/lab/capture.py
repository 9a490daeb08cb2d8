"""A bounded tcpdump in one host of a lab: what that host sees, as a pcap file.

Bounded twice: by `timeout --signal=INT` around tcpdump (so it stops on its own, flushing its
file, even if the fwlab process that started it is killed) and by tcpdump's own `-c COUNT`.
tcpdump keeps root's privileges (`-Z root`) so it can write wherever the user asked.

What is captured by default:
- the firewall, no interface given: every interface, packets coming in only (`-i any -Q in`), which
  is what `fwlab replay` wants: each packet once, as it reaches the firewall;
- any other host: its only interface, both directions (`any` if it has several).

An interface is named as the rules name it (`-i lan`); on an attachment that is the device the
name is mapped to (`lan=eth1`: tcpdump listens on eth1, and the command says `lan (eth1)`).

Without --seconds it stops after 10 s, or with --count alone after COUNT_ONLY_LIMIT.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from fw.errors import LabError
from fw.lab import netns as labns

__all__ = ["Capture", "CaptureResult", "finish", "plan"]

LISTENING = re.compile(r"listening on (\S+), link-type (\S+)")
CAPTURED = re.compile(r"(\d+) packets? captured")
COUNT_ONLY_LIMIT = 600.0  # seconds: --count alone still ends, even on a quiet link


@dataclass(frozen=True)
class CaptureResult:
    packets: int
    link_type: str | None
    interface: str
    path: Path


@dataclass(frozen=True)
class Capture:
    """How to capture: where, how long, how many."""

    lab: str
    host: str
    interface: str
    inbound_only: bool
    out: Path
    seconds: float
    count: int | None
    label: str = ""  # how to say the interface: `lan (eth1)` where an attachment renames it

    def argv(self) -> list[str]:
        # --immediate-mode: without it libpcap hands packets over a ring block at a time (or
        # after its timeout), and a Ctrl-C soon after the traffic lost them all: 0 packets
        cmd = ["timeout", "--signal=INT", f"{self.seconds:g}", "tcpdump", "-i", self.interface,
               "-n", "-U", "--immediate-mode", "-Z", "root", "-w", str(self.out)]
        if self.inbound_only:
            cmd += ["-Q", "in"]
        if self.count is not None:
            cmd += ["-c", str(self.count)]
        return cmd

    def start(self) -> subprocess.Popen:
        """tcpdump running in the host's namespace; its stderr says when it listens."""
        handle = labns.attach(self.lab)
        return handle.exec(self.host, self.argv(), stdin=subprocess.DEVNULL,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def plan(lab: str, host: str, interface: str | None, out: str, seconds: float | None,
         count: int | None) -> Capture:
    """Check the request against the lab and fill in the defaults above."""
    handle = labns.attach(lab)
    if host not in handle.namespaces:
        raise LabError(f"lab {lab!r} has no host {host!r}: hosts are "
                       f"{', '.join(handle.namespaces)}")
    devices = handle.interfaces(host)  # the lab's (the rules') name -> device
    names = list(devices)
    if interface is not None and interface not in (*names, "any", "lo"):
        have = ", ".join(n if d == n else f"{n} ({d})" for n, d in devices.items())
        raise LabError(f"{host} has no interface {interface!r}: it has {have}")
    firewall = host == handle.firewall_host
    chosen = devices.get(interface or "", interface) or (
        devices[names[0]] if len(names) == 1 and not firewall else "any")
    if seconds is not None and seconds <= 0:
        raise LabError(f"--seconds {seconds:g}: give a time above 0")
    if count is not None and count <= 0:
        raise LabError(f"--count {count}: give a number above 0")
    path = Path(out).expanduser().resolve()
    if not path.parent.is_dir():
        raise LabError(f"{out}: no directory {path.parent}")
    bound = seconds if seconds is not None else (COUNT_ONLY_LIMIT if count is not None else 10.0)
    label = f"{interface} ({chosen})" if interface and chosen != interface else chosen
    return Capture(lab, host, chosen, firewall and interface is None, path, bound, count, label)


def finish(proc: subprocess.Popen, capture: Capture, listening: str) -> CaptureResult:
    """Wait for tcpdump to stop by itself (count or time), and read what it says."""
    assert proc.stderr is not None
    rest = proc.stderr.read()
    proc.wait()
    if proc.returncode not in (0, 124):  # 124: timeout ended it, as planned
        raise LabError(f"tcpdump in {capture.host} failed: {(listening + rest).strip()[-300:]}")
    link = LISTENING.search(listening)
    got = CAPTURED.search(rest)
    return CaptureResult(int(got.group(1)) if got else 0, link.group(2) if link else None,
                         capture.label or capture.interface, capture.out)
