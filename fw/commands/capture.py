"""`fwlab capture`: a pcap of what one lab host sees, bounded in time and count (tcpdump)."""

from __future__ import annotations

import os
import select
import signal
import time
from typing import Annotated

import typer

from fw.commands.options import NameOpt, need_root
from fw.errors import LabError

START_TIMEOUT = 10.0  # seconds for tcpdump to say it listens


def capture(
    host: Annotated[str, typer.Argument(help="Host of the lab (client, server, fw, ...).")],
    out: Annotated[str, typer.Option("--out", "-o", help="The pcap file to write.")],
    interface: Annotated[str | None, typer.Option(
        "--interface", "-i",
        help="Interface (default: the host's own; on the firewall every interface, packets "
             "coming in only: what `fwlab replay` wants).")] = None,
    seconds: Annotated[float | None, typer.Option(
        "--seconds", help="Stop after this many seconds (default 10).")] = None,
    count: Annotated[int | None, typer.Option(
        "--count", "-c", help="Stop after this many packets.")] = None,
    name: NameOpt = "default",
) -> None:
    """Capture what a host sees into a pcap file (tcpdump in its namespace), bounded."""
    need_root("capture")
    from fw.commands.output import stderr, stdout
    from fw.lab.capture import finish, plan

    job = plan(name, host, interface, out, seconds, count)
    proc = job.start()
    listening = wait_listening(proc)
    direction = " (coming in)" if job.inbound_only else ""
    limit = f"{job.count} packets or " if job.count else ""
    stderr.print(f"capturing on {host} {job.label or job.interface}{direction} into {job.out}: "
                 f"until {limit}{job.seconds:g} s", markup=False)
    try:
        result = finish(proc, job, listening)
    except KeyboardInterrupt:
        proc.send_signal(signal.SIGINT)  # timeout passes it on; tcpdump closes the file
        result = finish(proc, job, listening)
    stdout.print(f"{result.packets} packets from {host} {result.interface} in {result.path} "
                 f"(link type {result.link_type or '?'})", markup=False)


def wait_listening(proc) -> str:
    """What tcpdump says on stderr until 'listening on ...', or a one-line error. Read from the
    descriptor itself: a buffered readline could swallow that line while select() waits on."""
    assert proc.stderr is not None
    fd, text = proc.stderr.fileno(), ""
    deadline = time.monotonic() + START_TIMEOUT
    while "listening on" not in text:
        ready, _, _ = select.select([fd], [], [], max(0.0, deadline - time.monotonic()))
        chunk = os.read(fd, 4096).decode(errors="replace") if ready else ""
        if not chunk:
            proc.kill()  # the tcpdump this command started, by PID
            proc.wait()
            raise LabError(f"tcpdump did not start: {text.strip()[-300:] or 'no answer'}")
        text += chunk
    return text
