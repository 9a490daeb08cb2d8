"""Names inside a lab: each host resolves the lab's host names, and nothing else, at once.

`ip netns exec NS` bind-mounts every file of /etc/netns/NS/ over the one of the same name in /etc
(in a mount namespace of its own), so a process started that way (`fwlab exec`, `fwlab shell`,
the daemon, LabHandle.spawn) reads the lab's files:

- `hosts`: every lab host's addresses under its name, those on a segment the reading host shares
  listed first (so `fw` is the firewall's near side);
- `nsswitch.conf`: the machine's own, with `hosts: files`: no lookup leaves the lab, and a name
  not in `hosts` fails at once (`python3 -m http.server` resolves its address at start-up);
- `resolv.conf`: no name server, so tools with a resolver of their own (nmap, dig) give up at
  once instead of asking the machine's resolver, which the lab cannot reach.

`remove(namespaces)` deletes only these files and their (then empty) directory; `down` calls it,
also for namespaces already gone (`lab_dirs` finds what a crash left).
"""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

from fw.lab.topology import Topology

__all__ = ["ETC_NETNS", "hosts_text", "lab_dirs", "remove", "write"]

ETC_NETNS = Path("/etc/netns")
FILES = ("hosts", "nsswitch.conf", "resolv.conf")
RESOLV_CONF = """\
# fwlab lab: names come from /etc/hosts (the lab's hosts); no name server, so an unknown name
# fails at once and nothing is asked of the machine's resolver.
options attempts:1 timeout:1
"""


def hosts_text(topology: Topology, viewer: str) -> str:
    """/etc/hosts as `viewer` sees the lab: one line per address, nearest addresses first."""
    nodes = topology.nodes()
    near = {iface.segment for iface in nodes[viewer].interfaces.values()}
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    for host, node in nodes.items():
        ifaces = sorted(node.interfaces.values(), key=lambda i: i.segment not in near)
        lines += [f"{addr.ip}\t{host}" for iface in ifaces for addr in iface.addresses]
    return "\n".join(lines) + "\n"


def nsswitch_text(machine: Path = Path("/etc/nsswitch.conf")) -> str:
    """The machine's nsswitch.conf (users and groups as usual) with `hosts: files`."""
    try:
        text = machine.read_text()
    except OSError:
        text = "passwd: files\ngroup: files\nshadow: files\n"
    text, found = re.subn(r"(?m)^hosts:.*$", "hosts:          files", text)
    return text if found else text + "hosts:          files\n"


def write(topology: Topology, namespaces: dict[str, str]) -> None:
    """The three files for every host's namespace ({host: namespace})."""
    nsswitch = nsswitch_text()
    for host, ns in namespaces.items():
        d = ETC_NETNS / ns
        d.mkdir(parents=True, exist_ok=True)
        (d / "hosts").write_text(hosts_text(topology, host))
        (d / "nsswitch.conf").write_text(nsswitch)
        (d / "resolv.conf").write_text(RESOLV_CONF)


def remove(namespaces: list[str]) -> None:
    """Delete what `write` made for these namespaces, and nothing else (/etc/netns stays)."""
    for ns in namespaces:
        d = ETC_NETNS / ns
        for name in FILES:
            with contextlib.suppress(FileNotFoundError):
                (d / name).unlink()
        with contextlib.suppress(OSError):
            d.rmdir()  # only when empty: a file someone else put there stays


def lab_dirs(prefix: str) -> list[str]:
    """Namespaces with files under /etc/netns whose names start with a lab's prefix."""
    try:
        return sorted(p.name for p in ETC_NETNS.iterdir() if p.name.startswith(prefix))
    except FileNotFoundError:
        return []
