"""The kernel's connection table in a lab's firewall namespace, as `fwlab conntrack` and `fwlab
nat` show the engine's (rows like fw/views.py's), read with conntrack-tools.

`conntrack -L -o extended` is read rather than `-o xml`: the XML of conntrack 1.4.7 leaves out
the ICMP type and id. A line is the family, the protocol, the seconds left, the TCP state, then
`key=value` pairs for the original direction and again for the reply, and flags in brackets:

    ipv4 2 tcp 6 118 TIME_WAIT src=192.0.2.2 dst=203.0.113.10 sport=43038 dport=80 packets=5
    bytes=268 src=203.0.113.10 dst=203.0.113.1 sport=80 dport=43038 packets=4 bytes=218
    [ASSURED] mark=0 use=1

A connection is NAT'd when its reply tuple is not the original one turned round: the reply's
destination differs for source NAT, its source for destination NAT.
"""

from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass, field
from ipaddress import ip_address

from fw.core.text import endpoint
from fw.errors import LabError

__all__ = ["Flow", "conntrack_rows", "nat_rows", "parse", "read_flows"]

DIRECTION_KEYS = ("src", "dst", "sport", "dport", "type", "code", "id", "packets", "bytes")


@dataclass
class Flow:
    family: int
    proto: str
    expires_in: int
    state: str | None
    orig: dict[str, str] = field(default_factory=dict)
    reply: dict[str, str] = field(default_factory=dict)
    flags: set[str] = field(default_factory=set)

    def ends(self, side: dict[str, str]) -> tuple[str, str]:
        """(source, destination) as text: address:port, or the bare address for ICMP."""
        src, dst = side.get("src", "?"), side.get("dst", "?")
        if "sport" not in side:
            return src, dst
        family = self.family
        return (endpoint(family, int(ip_address(src)), int(side["sport"])),
                endpoint(family, int(ip_address(dst)), int(side["dport"])))

    def tuple_text(self, side: dict[str, str]) -> str:
        src, dst = self.ends(side)
        ident = f" id {side['id']}" if "id" in side and "sport" not in side else ""
        return f"{src} -> {dst}{ident}"

    def nat_kind(self) -> str | None:
        o, r = self.orig, self.reply
        kinds = []
        if (r.get("dst"), r.get("dport"), r.get("id")) != (o.get("src"), o.get("sport"),
                                                         o.get("id")):
            kinds.append("snat")
        if (r.get("src"), r.get("sport")) != (o.get("dst"), o.get("dport")):
            kinds.append("dnat")
        return "+".join(kinds) or None


def parse(line: str) -> Flow | None:
    """One line of `conntrack -L -o extended`; None for what is not a flow."""
    words = line.split()
    if len(words) < 6 or words[0] not in ("ipv4", "ipv6") or not words[4].isdigit():
        return None
    flow = Flow(4 if words[0] == "ipv4" else 6, words[2], int(words[4]), None)
    side = flow.orig
    for word in words[5:]:
        key, eq, value = word.partition("=")
        if not eq:
            if word.startswith("["):
                flow.flags.add(word.strip("[]").lower())
            elif flow.state is None and not flow.orig:
                flow.state = word.lower()
            continue
        if key not in DIRECTION_KEYS:
            continue
        if key in side and side is flow.orig:
            side = flow.reply
        side[key] = value
    return flow


def read_flows(ns: str) -> list[Flow]:
    """Every flow of both families in the namespace `ns` (conntrack-tools' `conntrack`)."""
    if shutil.which("conntrack") is None:
        raise LabError("the kernel's conntrack table needs conntrack-tools: "
                       "apt-get install conntrack (scripts/setup does)")
    argv = ["ip", "netns", "exec", ns, "conntrack", "-L", "-o", "extended"]
    flows = []
    for family in ("ipv4", "ipv6"):
        res = subprocess.run([*argv, "-f", family], capture_output=True, text=True,
                             timeout=30, check=False)
        if res.returncode != 0:
            why = (res.stderr.strip().splitlines() or ["failed"])[-1]
            raise LabError(f"conntrack -L in {ns}: {why}")
        flows += [f for f in map(parse, res.stdout.splitlines()) if f is not None]
    return flows


def counts(flow: Flow, key: str) -> list[int] | None:
    """[original, reply] packets or bytes; None unless nf_conntrack_acct was on for the flow."""
    if key not in flow.orig:
        return None
    return [int(flow.orig[key]), int(flow.reply.get(key, 0))]


def conntrack_rows(flows: list[Flow]) -> list[dict]:
    return [{"proto": f.proto, "orig": f.tuple_text(f.orig), "reply": f.tuple_text(f.reply),
             "state": f.state or ("unreplied" if "unreplied" in f.flags else "-"),
             "assured": "assured" in f.flags, "expires_in": f.expires_in,
             "packets": counts(f, "packets"), "bytes": counts(f, "bytes")} for f in flows]


def turned(side: dict[str, str]) -> dict[str, str]:
    """A reply tuple as the original direction it stands for (source and destination swapped)."""
    pairs = {"src": "dst", "dst": "src", "sport": "dport", "dport": "sport"}
    return {pairs.get(key, key): value for key, value in side.items()}


def nat_rows(flows: list[Flow]) -> list[dict]:
    """The translated connections: as they were sent, and as the far side sees them."""
    rows = []
    for f in flows:
        kind = f.nat_kind()
        if kind is None:
            continue
        rows.append({"proto": f.proto, "nat": kind, "original": f.tuple_text(f.orig),
                     "translated": f.tuple_text(turned(f.reply)), "state": f.state or "-",
                     "expires_in": f.expires_in})
    return rows
