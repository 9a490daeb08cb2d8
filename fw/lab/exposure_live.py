"""`fwlab exposure --live`: the computed exposure checked with real packets in a lab.

For each rule file a fresh lab (so no connection of one file's probes is known to the next),
listeners on the inside hosts (packet sockets: what arrived), and sweeps from `attacker`: TCP SYN,
TCP ACK and UDP to every port of the chosen targets, from the source port the analysis says a
sender needs. Sweeps are paced; if the kernel's queue dropped anything during one, it is repeated
more slowly, since a dropped probe would read as "filtered". The inside hosts' own answers (RST,
port unreachable) are silenced for the measurement: they would only double the firewall's load.
The firewall is fwlab's engine, or with engine "kernel" the kernel running the exported rules
(`fwlab up --engine kernel`): the same probes, so the figures of the two stand side by side.

ICMP is probed too: an echo request and every type the analysis says gets in (neighbour
discovery and MLD aside, which no router forwards), to each target.

Once a flow is open (`--after`), the inside host sends the given packets first (again before
each sweep, so no state times out meanwhile), and the sweep runs from every host on the outside
segment, from the ports the inside host sent to and from another one; what each sender got in is
kept apart (`senders`) and compared with what the analysis says that sender reaches
(fw/analysis/exposure_senders.py): that is what tells the NAT filtering behaviours apart.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from ipaddress import ip_address
from pathlib import Path

from fw.analysis.exposure import Exposure, Probe
from fw.analysis.exposure_text import icmp_types_text, port_ranges_text
from fw.core import ranges
from fw.core.protocols import ECHO_REQUEST, ICMP_OF_FAMILY, LINK_CONTROL_ICMPV6
from fw.core.ranges import IntervalSet
from fw.engine.packet import decode
from fw.errors import LabError
from fw.lab.topology import Topology, default_topology, load_topology
from fw.packetspec import parse_packet

SWEEPS = (("tcp_syn", "tcp", "S"), ("tcp_any", "tcp", "A"), ("udp", "udp", ""))
CLASSES = (*(name for name, _, _ in SWEEPS), "icmp")
ANY_SOURCE_PORT = 40000
START_RATE = 25_000.0  # probes per second; slowed after a sweep that overflowed the queue
TRIES = 3
SHORT_SWEEP = 2048  # ports: below this, each rule file's lab is measured at the same time
SILENCE = (  # the inside hosts' answers to probes, dropped while measuring
    ["iptables-nft", "-A", "OUTPUT", "-p", "tcp", "--tcp-flags", "RST", "RST", "-j", "DROP"],
    ["iptables-nft", "-A", "OUTPUT", "-p", "icmp", "--icmp-type", "port-unreachable", "-j",
     "DROP"],
    ["ip6tables-nft", "-A", "OUTPUT", "-p", "tcp", "--tcp-flags", "RST", "RST", "-j", "DROP"],
    ["ip6tables-nft", "-A", "OUTPUT", "-p", "icmpv6", "--icmpv6-type", "port-unreachable", "-j",
     "DROP"],
)


@dataclass
class Target:
    host: str
    address: str
    also: list[tuple[int, int]] = field(default_factory=list)  # ports swept beyond --ports


@dataclass(frozen=True)
class Sender:
    """An outside host probing, from one source port (None: the port the plan gives each class,
    the one the analysis says gets in)."""

    host: str
    addresses: tuple[tuple[int, str], ...]  # (family, address)
    sport: int | None = None

    def address(self, family: int) -> str | None:
        return next((a for f, a in self.addresses if f == family), None)


@dataclass(frozen=True)
class Opener:
    """A packet an inside host sends before the sweep (`--after`)."""

    host: str
    dst: str
    raw: bytes


@dataclass
class Plan:
    """Who is probed, by whom and from which source port, per class."""

    targets: list[Target]
    source_ports: dict[str, int]
    listeners: dict[str, str]  # host -> interface
    senders: list[Sender] = field(default_factory=list)
    icmp_types: dict[int, list[int]] = field(default_factory=dict)  # family -> types probed
    openers: list[Opener] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def per_sender(self) -> bool:
        """Kept apart per sender: once a flow is open, who sends is what matters."""
        return bool(self.openers)


def fwlab(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fw", *args], capture_output=True, text=True,
                          timeout=timeout, check=False)


def ns(lab: str, host: str) -> str:
    return f"fwl-{lab}-{host}"


def in_ns(lab: str, host: str, argv: list[str], **kw) -> subprocess.Popen:
    return subprocess.Popen(["ip", "netns", "exec", ns(lab, host), *argv], **kw)


# -- planning ---------------------------------------------------------------------------------


def first_port(ranges) -> int:
    """A source port the analysis accepts: the sender's choice, so any allowed one will do."""
    ranges = list(ranges)
    if not ranges or ranges[0] == (0, 65535):
        return ANY_SOURCE_PORT
    lo, hi = ranges[0]
    return ANY_SOURCE_PORT if lo <= ANY_SOURCE_PORT <= hi else lo


def inside_hosts(topology: Topology, exposure: Exposure) -> dict[str, tuple[str, list]]:
    """Hosts with an address the analysis counts as inside (behind `--inside IFACE`, or in
    `--inside PREFIX`): name -> (interface, those addresses)."""
    inside = ranges.norm(r for part in exposure.sides.by_oif.values() for r in part)
    out = {}
    for name, host in topology.hosts.items():
        for ifname, iface in host.interfaces.items():
            addrs = [a.ip for a in iface.addresses
                     if ranges.contains(inside, a.ip.version << 128 | int(a.ip))]
            if addrs:
                out[name] = (ifname, addrs)
    return out


def outside_hosts(topology: Topology, exposure: Exposure) -> list[Sender]:
    """The hosts on the firewall's outside segment, the attacker first."""
    segment = topology.firewall.interfaces[exposure.sides.outside].segment
    out = []
    for name, ifname in topology.segments().get(segment, []):
        host = topology.hosts.get(name)
        if host is not None:
            addrs = tuple((a.ip.version, str(a.ip)) for a in host.interfaces[ifname].addresses)
            out.append(Sender(name, addrs))
    return sorted(out, key=lambda s: (s.host != "attacker", s.host))


def signature(exposure: Exposure, family: int, address) -> tuple[str, ...]:
    """Which classes expose this address: hosts alike need only one of them probed."""
    value = int(address)
    return tuple(
        name for name, cls in exposure.classes().items()
        if any(lo <= value <= hi for lo, hi in cls.addresses.get(family, ())))


def plan(exposure: Exposure, topology: Topology) -> Plan:
    hosts = inside_hosts(topology, exposure)
    targets, seen = [], set()
    for name, (_ifname, addrs) in hosts.items():
        for address in addrs:
            key = (address.version, signature(exposure, address.version, address))
            if key not in seen:
                seen.add(key)
                targets.append(Target(name, str(address)))
    openers = opening_packets(exposure, topology)
    targets += public_targets(exposure, topology, mapped_ports(exposure))
    ports = {name: first_port(exposure[name].source_ports) for name, _, _ in SWEEPS}
    listeners = {name: ifname for name, (ifname, _) in hosts.items()}
    icmp = icmp_probe_types(exposure)
    if not openers:
        return Plan(targets, ports, listeners, [attacker(topology)], icmp)
    remote = sorted({decode(o.raw).dport for o in openers} - {-1, 0})
    senders = [Sender(s.host, s.addresses, sport) for s in outside_hosts(topology, exposure)
               for sport in sorted({*remote, ANY_SOURCE_PORT})]
    return Plan(targets, ports, listeners, senders, icmp, openers)


def attacker(topology: Topology) -> Sender:
    addrs = tuple((f, attacker_address(topology, f)) for f in (4, 6))
    return Sender("attacker", addrs)


def icmp_probe_types(exposure: Exposure) -> dict[int, list[int]]:
    """Per family, the echo request and every type the analysis lets in, but neighbour
    discovery and MLD (link-local control: not counted, and no router forwards them)."""
    out = {}
    for family in (4, 6):
        let_in = [t for lo, hi in exposure["icmp"].types.get(family, ()) for t in range(lo, hi + 1)]
        types = {ECHO_REQUEST[family], *let_in} - (LINK_CONTROL_ICMPV6 if family == 6 else set())
        out[family] = sorted(types)
    return out


def opening_packets(exposure: Exposure, topology: Topology) -> list[Opener]:
    """The `--after` packets, each with the lab host that has its source address."""
    owners = {str(a): name for name, host in topology.hosts.items()
              for iface in host.interfaces.values() for a in (x.ip for x in iface.addresses)}
    out = []
    for text in exposure.after:
        raw = parse_packet(text)
        pkt = decode(raw)
        src, dst = (str(ip_address(a)) for a in (pkt.src, pkt.dst))
        if src not in owners:
            raise LabError(f"--after {text!r}: no host of the lab has the address {src}, so "
                           "none can send it")
        out.append(Opener(owners[src], dst, raw))
    return out


def mapped_ports(exposure: Exposure) -> list[tuple[int, int]]:
    """The outside ports of the NAT mappings the `--after` packets make: probes addressed there
    reach the inside through them."""
    if not exposure.after:
        return []
    from fw.analysis.exposure_after import state_after

    engine = state_after(exposure.ruleset, exposure.routing, exposure.after)
    return sorted({(m.outside[1],) * 2 for conn in engine.conntrack if conn.nat is not None
                   and (m := conn.nat.mapping) is not None})


def public_targets(exposure: Exposure, topology: Topology,
                   mapped: Sequence[tuple[int, int]] = ()) -> list[Target]:
    """The firewall's outside IPv4 address, when port forwards or NAT mappings exist: probes
    addressed there reach the inside only through them."""
    forwarded = [r for cls in exposure.classes().values() for use in cls.forwards.values()
                 for r in use.dport]
    if not forwarded and not mapped and not any(c.forwards for c in exposure.classes().values()):
        return []
    outside = topology.firewall.interfaces[exposure.sides.outside]
    return [Target(topology.firewall.host, str(a.ip), [*forwarded, *mapped])
            for a in outside.addresses if a.version == 4]


def attacker_address(topology: Topology, family: int) -> str:
    host = topology.hosts.get("attacker")
    if host is None:
        raise LabError("--live needs a host named 'attacker' on the outside")
    for iface in host.interfaces.values():
        for a in iface.addresses:
            if a.version == family:
                return str(a.ip)
    raise LabError(f"the attacker has no IPv{family} address")


# -- measuring --------------------------------------------------------------------------------


@contextmanager
def lab_for(rules: str, topology_file: str | None, engine: str = "fwlab",
            index: int = 0) -> Iterator[str]:
    name = f"exp{os.getpid() % 100000}{engine[0]}{index}"
    args = ["up", "--name", name, "--rules", rules, "--engine", engine]
    if engine == "fwlab":  # the probes come from one source at up to START_RATE a second: a
        # limit would drop them unjudged and uncounted, and the openers queue holds as many as
        # the main queue (a sweep is one long burst of SYNs; drops only slow it down)
        args += ["--opener-limit", "0", "--openers-maxlen", "8192"]
    args += [topology_file] if topology_file else []
    up = fwlab(*args)
    try:
        if up.returncode != 0:
            raise LabError(f"fwlab up failed: {(up.stderr or up.stdout).strip().splitlines()[-1]}")
        yield name
    finally:
        fwlab("down", "--name", name)


def silence(lab: str, hosts: list[str]) -> None:
    for host in hosts:
        for rule in SILENCE:
            in_ns(lab, host, rule, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL).wait(10)


@contextmanager
def listening(lab: str, p: Plan, peers: list[str], workdir: Path) -> Iterator[dict[str, Path]]:
    """Listeners on the inside hosts, recording what arrives from the `peers`."""
    outs, procs = {}, []
    for host, ifname in p.listeners.items():
        out = workdir / f"{host}.json"
        argv = [sys.executable, "-m", "fw.lab.probe", "listen", "--iface", ifname,
                "--out", str(out), "--seconds", "600"]
        argv += [arg for peer in peers for arg in ("--peer", peer)]
        procs.append(in_ns(lab, host, argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        outs[host] = out
    try:
        wait_for(lambda: all(Path(f"{o}.ready").exists() for o in outs.values()), 10)
        yield outs
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            with suppress(subprocess.TimeoutExpired):
                proc.wait(10)


def wait_for(condition: Callable[[], bool], seconds: float) -> None:
    end = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > end:
            raise LabError("the probe listeners did not start")
        time.sleep(0.05)


def queue_drops(lab: str, engine: str) -> int:
    """Probes the engine daemon's queue lost (none to lose when the kernel judges)."""
    from fw.lab.nfqueue import queue_stats

    if engine != "fwlab":
        return 0
    return sum(q.queue_dropped + q.user_dropped for q in queue_stats(ns(lab, "fw")))


def sweep(lab: str, host: str, probes: list[dict], rate: float, workdir: Path) -> int:
    """Send `probes` from `host` (paced at `rate`); how many were sent."""
    plan_file = workdir / f"plan-{host}.json"
    plan_file.write_text(json.dumps(probes))
    argv = [sys.executable, "-m", "fw.lab.probe", "send", "--plan", str(plan_file),
            "--rate", str(rate)]
    proc = in_ns(lab, host, argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=300)
    if proc.returncode != 0:
        raise LabError(f"the probe sender failed: {err.decode().strip()[-200:]}")
    return json.loads(out)["sent"]


@dataclass
class Block:
    """One sweep: a sender, the probes it sends."""

    sender: Sender
    probes: list[dict]


def blocks(p: Plan, ports: tuple[int, int]) -> list[Block]:
    """The sweeps: once a flow is open, one per sender, source port and class, so that the
    inside host's packets are sent again before each and no state times out (a UDP flow's
    30 s), and so that one class's probes cannot overtake another's (a SYN waits in the openers
    queue while an ACK of the same flow passes in the main one, and would find the state the
    ACK left); else one, from the attacker."""
    if not p.per_sender:
        one = p.senders[0]
        items = [item for cls, proto, flags in SWEEPS
                 for item in port_probes(p, one, cls, proto, flags, ports)]
        return [Block(one, items + icmp_probes(p, one))]
    first = {s.host: s for s in reversed(p.senders)}  # ICMP has no port: once a host
    out = []
    for s in p.senders:
        parts = [port_probes(p, s, cls, proto, flags, ports) for cls, proto, flags in SWEEPS]
        parts.append(icmp_probes(p, s) if first[s.host] is s else [])
        out += [Block(s, part) for part in parts if part]
    return out


def port_probes(p: Plan, sender: Sender, cls: str, proto: str, flags: str,
                ports: tuple[int, int]) -> list[dict]:
    out = []
    for target in p.targets:
        src = sender.address(ip_address(target.address).version)
        if src is not None:
            out.append({"src": src, "dst": target.address, "proto": proto, "flags": flags,
                        "sport": sender.sport or p.source_ports[cls],
                        "ports": IntervalSet([ports, *target.also]).ranges()})
    return out


def icmp_probes(p: Plan, sender: Sender) -> list[dict]:
    """Each type to each target, built as the analysis's witnesses are (an error quotes a
    packet of no connection)."""
    out = []
    for target in p.targets:
        family = ip_address(target.address).version
        src = sender.address(family)
        proto = ICMP_OF_FAMILY[family]
        for itype in p.icmp_types.get(family, []) if src is not None else []:
            raw = Probe(family, proto, src, target.address, icmp_type=itype).packet()
            out.append({"raw": raw.hex(), "dst": target.address})
    return out


def open_flows(lab: str, p: Plan, workdir: Path) -> None:
    """The inside hosts send the `--after` packets (again), then the sweep may start."""
    for host in dict.fromkeys(o.host for o in p.openers):
        items = [{"raw": o.raw.hex(), "dst": o.dst} for o in p.openers if o.host == host]
        sweep(lab, host, items, START_RATE, workdir)
    time.sleep(0.2)  # ARP/ND for the first packet, and the engine's verdict


def peers_of(p: Plan) -> list[str]:
    return sorted({a for s in p.senders for _, a in s.addresses})


def measure_one(rules: str, exposure: Exposure, topology: Topology, topology_file: str | None,
                ports: tuple[int, int], step: Callable[[str], None], engine: str,
                index: int = 0) -> dict:
    p = plan(exposure, topology)
    sweeps = blocks(p, ports)
    rate = START_RATE
    with tempfile.TemporaryDirectory(prefix="fwlab-exposure-") as tmp, lab_for(
            rules, topology_file, engine, index) as lab:
        silence(lab, list(topology.hosts))
        for attempt in range(TRIES):
            step(f"{rules} ({engine}): probing {len(p.targets)} target(s) from "
                 f"{len(p.senders)} sender(s) at {rate:,.0f}/s")
            before = queue_drops(lab, engine)
            with listening(lab, p, peers_of(p), Path(tmp)) as outs:
                sent = 0
                for block in sweeps:
                    if p.openers:
                        open_flows(lab, p, Path(tmp))
                    sent += sweep(lab, block.sender.host, block.probes, rate, Path(tmp))
                time.sleep(0.5)  # the last probes cross the engine
            dropped = queue_drops(lab, engine) - before
            if dropped == 0 or attempt == TRIES - 1:
                break
            rate *= 0.6
        arrived = collect(outs)
    return result(arrived, sent, dropped, rate, p, ports) | {"engine": engine}


Arrival = tuple[str, int, str, int]  # source, source port (-1 for ICMP), destination, port/type


def collect(outs: dict[str, Path]) -> dict[str, set[Arrival]]:
    got: dict[str, set[Arrival]] = {name: set() for name in CLASSES}
    for out in outs.values():
        if out.exists():
            data = json.loads(out.read_text())
            for name, rows in data["arrivals"].items():
                got.setdefault(name, set()).update(tuple(row) for row in rows)
    return got


def ranges_text(ports: set[int]) -> list[str]:
    return port_ranges_text(IntervalSet((port, port) for port in ports).ranges())


def types_of(rows: set[Arrival]) -> dict[int, ranges.Ranges]:
    """ICMP types arrived, per family (of the destination)."""
    per: dict[int, list] = {}
    for _src, _sport, dst, itype in rows:
        per.setdefault(ip_address(dst).version, []).append((itype, itype))
    return {f: ranges.norm(v) for f, v in sorted(per.items())}


def result(arrived: dict[str, set[Arrival]], sent: int, dropped: int, rate: float, p: Plan,
           ports: tuple[int, int]) -> dict:
    lo, hi = ports  # compared on the inside ports asked for (forwards may translate into them)
    kept = {name: {row for row in rows if name == "icmp" or lo <= row[3] <= hi}
            for name, rows in arrived.items()}
    live: dict = {name: {"count": len({row[3] for row in rows}),
                         "ranges": ranges_text({row[3] for row in rows})}
                  for name, rows in kept.items() if name != "icmp"}
    icmp = types_of(kept.get("icmp", set()))
    live["icmp"] = {"count": sum(ranges.count(t) for t in icmp.values()),
                    "types": icmp_types_text(icmp)}
    if p.per_sender:
        live["senders"] = by_sender(kept, p)
    live["probe"] = {"sent": sent, "queue_dropped": dropped, "rate": rate,
                     "ports": f"{ports[0]}-{ports[1]}",
                     "targets": [f"{t.host} {t.address}" for t in p.targets],
                     "source_ports": p.source_ports,
                     "icmp_types": {str(f): t for f, t in p.icmp_types.items()},
                     "senders": [sender_key(s.host, a, s.sport) for s in p.senders
                                 for _, a in s.addresses],
                     "after": [o.raw.hex() for o in p.openers]}
    return live


def sender_key(host: str, address: str, sport: int | None) -> str:
    if sport is None:
        return address
    return f"[{address}]:{sport}" if ":" in address else f"{address}:{sport}"


def by_sender(kept: dict[str, set[Arrival]], p: Plan) -> dict[str, dict[str, list[str]]]:
    """What each sender got in: class -> sender -> port ranges (ICMP: sender address ->
    types), every sender probed listed, nothing in as an empty list."""
    out: dict[str, dict[str, list[str]]] = {}
    for name in CLASSES:
        rows = kept.get(name, set())
        table: dict[str, list[str]] = {}
        for s in p.senders:
            for _, address in s.addresses:
                if name == "icmp":
                    mine = {r for r in rows if r[0] == address}
                    table[sender_key(s.host, address, None)] = icmp_types_text(types_of(mine))
                else:
                    mine = {r for r in rows if r[0] == address and r[1] == s.sport}
                    table[sender_key(s.host, address, s.sport)] = ranges_text(
                        {r[3] for r in mine})
        out[name] = table
    return out


def measure(exposures: list[Exposure], files: list[str], *, topology: str | None,
            ports: tuple[int, int] = (1, 65535),
            step: Callable[[str], None] = lambda text: None, engine: str = "fwlab") -> list[dict]:
    """Per file, what arrived of each class, measured through `engine`: fwlab's (the daemon)
    or the kernel's (the exported rules in nftables, `fwlab up --engine kernel`)."""
    if os.geteuid() != 0:
        raise LabError("--live needs root (a lab of network namespaces): run it with sudo")
    topo = load_topology(topology) if topology else default_topology()
    jobs = list(enumerate(zip(files, exposures, strict=True)))
    if ports[1] - ports[0] >= SHORT_SWEEP:  # long sweeps: the engine's CPU is the limit
        return [measure_one(f, e, topo, topology, ports, step, engine, i) for i, (f, e) in jobs]
    with ThreadPoolExecutor(max_workers=len(jobs) or 1) as pool:  # short: set-up dominates
        return list(pool.map(lambda job: measure_one(*job[1], topo, topology, ports, step,
                                                     engine, job[0]), jobs))
