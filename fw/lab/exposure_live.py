"""`fwlab exposure --live`: the computed exposure checked with real packets in a lab.

For each rule file a fresh lab (so no connection of one file's probes is known to the next),
listeners on the inside hosts (packet sockets: what arrived), and sweeps from `attacker`: TCP SYN,
TCP ACK and UDP to every port of the chosen targets, from the source port the analysis says a
sender needs. Sweeps are paced; if the kernel's queue dropped anything during one, it is repeated
more slowly, since a dropped probe would read as "filtered". The inside hosts' own answers (RST,
port unreachable) are silenced for the measurement: they would only double the firewall's load.
The firewall is fwlab's engine, or with engine "kernel" the kernel running the exported rules
(`fwlab up --engine kernel`): the same probes, so the figures of the two stand side by side.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass, field
from ipaddress import ip_address, ip_network
from pathlib import Path

from fw.analysis.exposure import Exposure
from fw.analysis.exposure_text import port_ranges_text
from fw.core.ranges import IntervalSet
from fw.errors import LabError
from fw.lab.topology import Topology, default_topology, load_topology

SWEEPS = (("tcp_syn", "tcp", "S"), ("tcp_any", "tcp", "A"), ("udp", "udp", ""))
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


@dataclass
class Plan:
    """Who is probed and from which source port, per class."""

    targets: list[Target]
    source_ports: dict[str, int]
    listeners: dict[str, str]  # host -> interface
    notes: list[str] = field(default_factory=list)


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
    """Hosts behind the inside interface: name -> (interface, addresses)."""
    prefixes = [ip_network(str(a), strict=False) for a in
                topology.firewall.interfaces[exposure.sides.inside].addresses]
    out = {}
    for name, host in topology.hosts.items():
        for ifname, iface in host.interfaces.items():
            addrs = [a.ip for a in iface.addresses if any(a.ip in p for p in prefixes)]
            if addrs:
                out[name] = (ifname, addrs)
    return out


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
    targets += public_targets(exposure, topology)
    ports = {name: first_port(exposure[name].source_ports) for name, _, _ in SWEEPS}
    listeners = {name: ifname for name, (ifname, _) in hosts.items()}
    return Plan(targets, ports, listeners)


def public_targets(exposure: Exposure, topology: Topology) -> list[Target]:
    """The firewall's outside IPv4 address, when port forwards exist: probes addressed there
    reach the inside only through them."""
    forwarded = [r for cls in exposure.classes().values() for use in cls.forwards.values()
                 for r in use.dport]
    if not any(cls.forwards for cls in exposure.classes().values()):
        return []
    outside = topology.firewall.interfaces[exposure.sides.outside]
    return [Target(topology.firewall.host, str(a.ip), list(forwarded))
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


def sweep(lab: str, probes: list[dict], rate: float, workdir: Path) -> int:
    plan_file = workdir / "plan.json"
    plan_file.write_text(json.dumps(probes))
    argv = [sys.executable, "-m", "fw.lab.probe", "send", "--plan", str(plan_file),
            "--rate", str(rate)]
    proc = in_ns(lab, "attacker", argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    out, err = proc.communicate(timeout=300)
    if proc.returncode != 0:
        raise LabError(f"the probe sender failed: {err.decode().strip()[-200:]}")
    return json.loads(out)["sent"]


def probes_for(p: Plan, topology: Topology, ports: tuple[int, int]) -> list[dict]:
    out = []
    for cls, proto, flags in SWEEPS:
        for target in p.targets:
            family = ip_address(target.address).version
            out.append({"src": attacker_address(topology, family), "dst": target.address,
                        "proto": proto, "flags": flags, "sport": p.source_ports[cls],
                        "ports": IntervalSet([ports, *target.also]).ranges()})
    return out


def measure_one(rules: str, exposure: Exposure, topology: Topology, topology_file: str | None,
                ports: tuple[int, int], step: Callable[[str], None], engine: str,
                index: int = 0) -> dict:
    p = plan(exposure, topology)
    peers = [attacker_address(topology, f) for f in (4, 6)]
    probes = probes_for(p, topology, ports)
    rate = START_RATE
    with tempfile.TemporaryDirectory(prefix="fwlab-exposure-") as tmp, lab_for(
            rules, topology_file, engine, index) as lab:
        silence(lab, list(p.listeners))
        for attempt in range(TRIES):
            step(f"{rules} ({engine}): probing {len(p.targets)} target(s) at {rate:,.0f}/s")
            before = queue_drops(lab, engine)
            with listening(lab, p, peers, Path(tmp)) as outs:
                sent = sweep(lab, probes, rate, Path(tmp))
                time.sleep(0.5)  # the last probes cross the engine
            dropped = queue_drops(lab, engine) - before
            if dropped == 0 or attempt == TRIES - 1:
                break
            rate *= 0.6
        arrived = collect(outs)
    return result(arrived, sent, dropped, rate, p, ports) | {"engine": engine}


def collect(outs: dict[str, Path]) -> dict[str, set[int]]:
    ports: dict[str, set[int]] = {name: set() for name, _, _ in SWEEPS}
    for out in outs.values():
        if out.exists():
            data = json.loads(out.read_text())
            for name, pairs in data["classes"].items():
                ports[name].update(port for _addr, port in pairs)
    return ports


def ranges_text(ports: set[int]) -> list[str]:
    return port_ranges_text(IntervalSet((port, port) for port in ports).ranges())


def result(arrived: dict[str, set[int]], sent: int, dropped: int, rate: float, p: Plan,
           ports: tuple[int, int]) -> dict:
    lo, hi = ports  # compared on the inside ports asked for (forwards may translate into them)
    arrived = {name: {port for port in got if lo <= port <= hi} for name, got in arrived.items()}
    live: dict = {name: {"count": len(got), "ranges": ranges_text(got)}
                  for name, got in arrived.items()}
    live["probe"] = {"sent": sent, "queue_dropped": dropped, "rate": rate,
                     "ports": f"{ports[0]}-{ports[1]}",
                     "targets": [f"{t.host} {t.address}" for t in p.targets],
                     "source_ports": p.source_ports}
    return live


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
