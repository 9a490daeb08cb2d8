"""Which engine worker judges a packet (`fwlab up --workers N`): an nft chain that marks every
packet with its worker + 1 before the queue rules (fw/lab/nfqueue.py) send mark *m* to queue
*m* - 1. Both directions of a flow, NAT'd replies included, must reach the worker that holds it:

1. port forwards belong to worker 0: packets to a firewall address on a forwarded port, the
   firewall's own answers from it, and packets from or to the forward's target address and port
   (no hash can relate the two sides of a forward);
2. packets to one of the firewall's own addresses (or a `snat to` address) by their TCP/UDP
   destination port, ICMP echoes by their id: worker *i* gives new NAT mappings only ports of
   class *i* (MappingTable.port_class = (N, i), the slicing `replay --workers` uses), so the
   replies to its mappings come back to it; the packets the firewall sends from its own
   addresses by their source port, the mirror of that;
3. everything else `symhash mod N`: symmetric over addresses and ports, so both directions of a
   flow meet and different flows of one host pair spread (the kernel's --queue-balance hashes
   addresses only).

N is a power of two (a divisor of the 16 port classes), so a port's class is `port & (N - 1)`,
which nft computes. The daemon's reject replies carry their worker's mark already (SO_MARK) and
are left alone. The table `inet fwlab_steer` is the lab's own; a reload rebuilds it when the
port forwards change (one nft transaction: no packet sees half a table).

What no mark can route: an ICMP error about a NAT'd flow, sent to the firewall's address, goes by
the hash of its addresses and may reach a worker that does not hold the flow (which then finds
no connection for it). docs/lab-notes.md, "Several workers".
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from typing import Any

from fw.core.protocols import TCP, UDP
from fw.engine.shard import CLASSES
from fw.errors import LabError
from fw.model import AddrMatch, PortMatch

__all__ = ["TABLE", "WORKER_COUNTS", "check_workers", "install", "remove", "script"]

TABLE = "fwlab_steer"  # in family inet
PRIORITY = "raw - 10"  # before the queue rules (raw, -300)
WORKER_COUNTS = tuple(n for n in range(1, CLASSES + 1) if CLASSES % n == 0)
PROTO_NAMES = {TCP: "tcp", UDP: "udp"}


def check_workers(workers: int) -> int:
    """`workers` when the lab can steer that many (a divisor of the port classes)."""
    if workers not in WORKER_COUNTS:
        raise LabError(f"--workers {workers}: one of {', '.join(map(str, WORKER_COUNTS))} "
                       f"(a worker owns whole NAT port classes, {CLASSES} of them)")
    return workers


def _by_class(workers: int, field: str) -> str:
    """`meta mark set FIELD & mask map { class : worker + 1, ... }`."""
    pairs = ", ".join(f"{c} : {c + 1}" for c in range(workers))
    return f"meta mark set {field} & {workers - 1} map {{ {pairs} }} return"


def _ports(ranges: Iterable[Any]) -> str:
    items = [str(r.lo) if r.lo == r.hi else f"{r.lo}-{r.hi}" for r in ranges]
    return f"{{ {', '.join(items)} }}"


def _forward_rules(rule: Any) -> list[str]:
    """Every packet of a port forward's connections to worker 0 (mark 1)."""
    dports = [m for m in rule.matches if isinstance(m, PortMatch) and m.kind == "dport"
              and not m.negate]
    if rule.to_addr is None or not dports:
        return []  # pools and forwards without a port: `up` refuses them with workers
    daddrs = [m for m in rule.matches if isinstance(m, AddrMatch) and m.kind == "daddr"
              and m.family == 4 and not m.negate]
    out = []
    for match in dports:
        proto, public = PROTO_NAMES[match.proto], _ports(match.ranges)
        target_ports = (f"{rule.to_ports.lo}-{rule.to_ports.hi}" if rule.to_ports else public)
        to_us = (f"ip daddr {{ {', '.join(map(str, daddrs[0].prefixes))} }}" if daddrs
                 else "fib daddr type local")
        from_us = to_us.replace("daddr", "saddr")
        out += [f"meta l4proto {proto} {to_us} th dport {public} meta mark set 1 return",
                f"meta l4proto {proto} {from_us} th sport {public} meta mark set 1 return",
                f"meta l4proto {proto} ip saddr {rule.to_addr} th sport {target_ports} "
                "meta mark set 1 return",
                f"meta l4proto {proto} ip daddr {rule.to_addr} th dport {target_ports} "
                "meta mark set 1 return"]
    return out


def _own_rules(workers: int, outside: list[str]) -> list[str]:
    """Packets to (from) the firewall's addresses by destination (source) port class."""
    out = []
    for side, port in (("daddr", "dport"), ("saddr", "sport")):
        places = [f"fib {side} type local"]
        if outside:
            places.append(f"ip {side} {{ {', '.join(outside)} }}")
        for place in places:
            out.append(f"meta l4proto {{ tcp, udp }} {place} {_by_class(workers, 'th ' + port)}")
            out.append(f"icmp type {{ echo-request, echo-reply }} {place} "
                       f"{_by_class(workers, 'icmp id')}")
    return out


def script(workers: int, ruleset: Any) -> str:
    """The nft script that (re)creates the steering table for `workers` and these rules."""
    forwards = [line for r in ruleset.nat if r.action == "dnat" for line in _forward_rules(r)]
    outside = sorted({str(r.to_addr) for r in ruleset.nat
                      if r.action == "snat" and r.to_addr is not None})
    body = [*forwards, *_own_rules(workers, outside),
            f"meta mark set symhash mod {workers} offset 1"]
    chains = []
    for chain, hook, first in (("pre", "prerouting", []),
                               ("out", "output", ["meta mark != 0 return"])):
        lines = [f"type filter hook {hook} priority {PRIORITY}; policy accept;", *first, *body]
        chains.append(f"  chain {chain} {{\n" + "".join(f"    {x}\n" for x in lines) + "  }\n")
    # add + delete first: one transaction replaces a table that may or may not be there
    return (f"add table inet {TABLE}\ndelete table inet {TABLE}\n"
            f"table inet {TABLE} {{\n{''.join(chains)}}}\n")


def _nft(ns: str, args: list[str], stdin: str | None = None) -> subprocess.CompletedProcess:
    if not ns:
        raise ValueError("steering needs a namespace: it never touches the root namespace")
    return subprocess.run(["ip", "netns", "exec", ns, "nft", *args], input=stdin,
                          capture_output=True, text=True, timeout=10, check=False)


def install(ns: str, text: str) -> None:
    """Load (or replace) the steering table in namespace `ns`; RuntimeError on failure."""
    res = _nft(ns, ["-f", "-"], text)
    if res.returncode != 0:
        raise RuntimeError(f"{ns}: nft steering table: {res.stderr.strip()}")


def remove(ns: str) -> None:
    """Delete the steering table (gone already: nothing to do)."""
    _nft(ns, ["delete", "table", "inet", TABLE])
