"""Build and tear down a lab: a namespace per host, veth pairs, bridges, addresses, routes.

Naming (the safety rules of docs/design.md "The lab"):
- every namespace of lab `<lab>` is `fwl-<lab>-<host>`; a segment with more than two members gets a
  bridge namespace `fwl-<lab>-br.<segment>` (host names cannot contain '.', so they never clash);
- lab names are lower-case letters and digits only, so the prefix `fwl-<lab>-` of one lab is never
  the prefix of another lab's namespaces;
- nothing is ever created in the root namespace: each veth is created inside one lab namespace with
  its peer placed directly in another (RTM_NEWLINK with IFLA_NET_NS_FD on the peer), already
  carrying the topology's interface name. Bridge ports in a bridge namespace are `p0`, `p1`, ...
- each host namespace has its own hosts, resolv.conf and nsswitch.conf under /etc/netns (see
  dns.py): the lab's names resolve, nothing goes to the machine's resolver;
- `down(name)` removes every namespace with the lab's prefix (deleting a namespace deletes its
  links) and their /etc/netns files, and ends only the processes this lab recorded in its state
  file, by PID (checked against the process start time, so a recycled PID is never signalled).
  It works on a half-built lab.

State: `/run/fwlab/<lab>/lab.json` (namespaces, the processes started with `LabHandle.spawn`,
the topology), written before the first namespace is created and updated as the lab grows.
fw/lab/runtime.py names every runtime file and reads /proc.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import json
import os
import re
import signal
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fw.errors import LabError
from fw.lab import dns, runtime
from fw.lab.runtime import LAB_NAME_RE, RUN_DIR, check_lab_name
from fw.lab.topology import Host, Topology

__all__ = [
    "ATTACHED_HOST",
    "NETNS_DIR",
    "PREFIX",
    "RUN_DIR",
    "LabError",
    "LabHandle",
    "attach",
    "bridge_ns_name",
    "down",
    "end_processes",
    "exec_in",
    "list_labs",
    "ns_name",
    "read_state",
    "remove_run_dir",
    "run_in",
    "up",
    "update_state",
]

PREFIX = "fwl-"
ATTACHED_HOST = "fw"  # the one host of an attachment: the namespace fwlab was attached to
NETNS_DIR = Path("/run/netns")  # where `ip netns` and pyroute2 keep the namespace bind mounts
IFA_F_NODAD = 0x02

# sysctls every namespace gets before its links exist (so `default.*` reaches the new links)
_HOST_SYSCTLS = {
    "net.ipv6.conf.all.accept_dad": "0",
    "net.ipv6.conf.default.accept_dad": "0",  # link-local addresses usable at once, too
    "net.ipv6.conf.all.accept_ra": "0",
    "net.ipv6.conf.default.accept_ra": "0",
    "net.ipv6.conf.default.router_solicitations": "0",  # no RS noise through the firewall
}
# The firewall's: the attach that `fwlab up` makes (fw/lab/attachment.py) sets the `all` ones
# again (and records them), but a lab is also used without it (tests feed its queue themselves),
# and `default.*` must be set before the links exist.
_FIREWALL_SYSCTLS = {
    **_HOST_SYSCTLS,
    "net.ipv4.ip_forward": "1",
    "net.ipv6.conf.all.forwarding": "1",
    "net.ipv6.conf.default.forwarding": "1",
    "net.ipv4.conf.all.send_redirects": "0",
    "net.ipv4.conf.default.send_redirects": "0",
    "net.ipv4.conf.all.rp_filter": "0",
    "net.ipv4.conf.default.rp_filter": "0",
    # The engine source-translates in prerouting (docs/design.md), so a masqueraded packet enters
    # routing with the firewall's own address as its source; without accept_local the kernel
    # drops it as a martian (fib_validate_source). See docs/lab-notes.md.
    "net.ipv4.conf.all.accept_local": "1",
    "net.ipv4.conf.default.accept_local": "1",
}
_BRIDGE_SYSCTLS = {
    # a bridge namespace is a switch: no addresses of its own, no IPv6 chatter, and bridged
    # frames do not go through that namespace's iptables (br_netfilter is built into this kernel)
    "net.ipv6.conf.all.disable_ipv6": "1",
    "net.ipv6.conf.default.disable_ipv6": "1",
    "net.bridge.bridge-nf-call-iptables": "0",
    "net.bridge.bridge-nf-call-ip6tables": "0",
    "net.bridge.bridge-nf-call-arptables": "0",
}


# -- names ------------------------------------------------------------------------------------


def lab_prefix(name: str) -> str:
    return f"{PREFIX}{check_lab_name(name)}-"


def ns_name(lab: str, host: str) -> str:
    """The namespace of `host` in lab `lab`: fwl-<lab>-<host>."""
    return f"{lab_prefix(lab)}{host}"


def bridge_ns_name(lab: str, segment: str) -> str:
    """The namespace holding the bridge of a segment with more than two members."""
    return f"{lab_prefix(lab)}br.{segment}"


def _existing_namespaces() -> list[str]:
    try:
        return sorted(p.name for p in NETNS_DIR.iterdir())
    except FileNotFoundError:
        return []


def lab_namespaces(lab: str) -> list[str]:
    """Namespaces that exist now and carry the lab's prefix."""
    prefix = lab_prefix(lab)
    return [n for n in _existing_namespaces() if n.startswith(prefix)]


# -- state file -------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked_state(lab: str) -> Iterator[dict[str, Any]]:
    """Read-modify-write the lab's state file under an exclusive lock."""
    runtime.lab_dir(lab).mkdir(parents=True, exist_ok=True, mode=0o755)
    with open(runtime.state_lock_path(lab), "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        path = runtime.state_path(lab)
        try:
            state = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            state = {"name": lab, "namespaces": [], "processes": [], "status": "new"}
        yield state
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2, sort_keys=True))
        os.replace(tmp, path)


def read_state(lab: str) -> dict[str, Any] | None:
    """The lab's state file, or None when there is no lab (or only half a file)."""
    try:
        return json.loads(runtime.state_path(lab).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _record_process(lab: str, pid: int, host: str, argv: Sequence[str], group: bool) -> None:
    start = runtime.proc_start_time(pid)
    with _locked_state(lab) as state:
        state["processes"].append(
            {"pid": pid, "start": start, "host": host, "argv": list(argv), "group": group}
        )


def _end_process(entry: dict[str, Any], grace: float = 1.0) -> None:
    """SIGTERM then SIGKILL one recorded process (and its process group if we made one)."""
    pid = int(entry["pid"])
    if not runtime.same_process(pid, entry.get("start")):
        return  # gone, or the PID now belongs to someone else
    group = bool(entry.get("group"))

    def send(sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)

    send(signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline:
        if not runtime.same_process(pid, entry["start"]):
            return
        time.sleep(0.01)
    send(signal.SIGKILL)


# -- running things inside a namespace ---------------------------------------------------------


def _netns_argv(ns: str, argv: Sequence[str]) -> list[str]:
    return ["ip", "netns", "exec", ns, *[str(a) for a in argv]]


def exec_in(lab: str, host: str, argv: Sequence[str], **popen_kwargs: Any) -> subprocess.Popen:
    """Start `argv` inside host's namespace (`ip netns exec fwl-<lab>-<host> argv...`).

    The returned process is NOT recorded in the lab state: the caller owns it. Use
    LabHandle.spawn for a long-running process that `down` must end."""
    return _popen_in(lab, host, ns_name(lab, host), argv, **popen_kwargs)


def _existing(lab: str, host: str, ns: str) -> str:
    if not (NETNS_DIR / ns).exists():
        raise LabError(f"lab {lab!r} has no host {host!r} (no namespace {ns})")
    return ns


def _popen_in(lab: str, host: str, ns: str, argv: Sequence[str], **kw: Any) -> subprocess.Popen:
    return subprocess.Popen(_netns_argv(_existing(lab, host, ns), argv), **kw)


def _run_ns(lab: str, host: str, ns: str, argv: Sequence[str], *, timeout: float = 10.0,
            check: bool = False, **run_kwargs: Any) -> subprocess.CompletedProcess:
    run_kwargs.setdefault("capture_output", True)
    run_kwargs.setdefault("text", True)
    return subprocess.run(_netns_argv(_existing(lab, host, ns), argv), timeout=timeout,
                          check=check, **run_kwargs)


def run_in(
    lab: str,
    host: str,
    argv: Sequence[str],
    *,
    timeout: float = 10.0,
    check: bool = False,
    **run_kwargs: Any,
) -> subprocess.CompletedProcess:
    """Run `argv` to completion inside host's namespace (output captured as text by default)."""
    return _run_ns(lab, host, ns_name(lab, host), argv, timeout=timeout, check=check,
                   **run_kwargs)


def _sysctl_all(pairs: dict[str, dict[str, str]], optional: set[str] = frozenset()) -> None:
    """Write sysctls in several namespaces at once: {ns: {key: value}}. One process per namespace,
    all started before any is waited for. Keys in `optional` may be missing in the kernel."""
    procs = []
    for ns, values in pairs.items():
        if not values:
            continue
        script = []
        for key, value in values.items():
            path = _sh_quote("/proc/sys/" + key.replace(".", "/"))
            write = f"echo {_sh_quote(str(value))} > {path}"
            script.append(f"if [ -e {path} ]; then {write}; fi" if key in optional else write)
        # a shell with `set -e` writes /proc/sys directly: one fork+exec per namespace
        cmd = _netns_argv(ns, ["sh", "-ec", "\n".join(script)])
        procs.append((ns, subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)))
    errors = []
    for ns, proc in procs:
        _, err = proc.communicate(timeout=10)
        if proc.returncode != 0:
            errors.append(f"{ns}: {err.strip() or 'sysctl failed'}")
    if errors:
        raise LabError("setting sysctls failed: " + "; ".join(errors))


def _sh_quote(s: str) -> str:
    return "'" + s.replace("'", "'\\''") + "'"


# -- the lab ----------------------------------------------------------------------------------


@dataclass
class LabHandle:
    """A running lab, or an attachment (`fwlab attach`: fwlab in front of a namespace it did not
    build, whose one host is ATTACHED_HOST and which has no topology). Cheap to rebuild from the
    state file with `attach(name)`."""

    name: str
    topology: Topology | None
    namespaces: dict[str, str] = field(default_factory=dict)  # host -> namespace
    up_seconds: float | None = None
    firewall_host: str = ""  # the topology's firewall, or ATTACHED_HOST
    devices: dict[str, str] = field(default_factory=dict)  # the firewall's: rule name -> device

    def __post_init__(self) -> None:
        if self.topology is not None:
            self.firewall_host = self.firewall_host or self.topology.firewall.host
            self.devices = self.devices or {i: i for i in self.topology.firewall.interfaces}

    @property
    def firewall_ns(self) -> str:
        return self.namespaces[self.firewall_host]

    def interfaces(self, host: str) -> dict[str, str]:
        """A host's interfaces: the name the lab (and the rules) use -> the device's name."""
        if host == self.firewall_host:
            return dict(self.devices)
        node = self.topology.nodes()[host] if self.topology else None
        return {i: i for i in node.interfaces} if node else {}

    def ns(self, host: str) -> str:
        try:
            return self.namespaces[host]
        except KeyError:
            raise LabError(f"lab {self.name!r} has no host {host!r}") from None

    def exec(self, host: str, argv: Sequence[str], **popen_kwargs: Any) -> subprocess.Popen:
        """Start a process in host's namespace; the caller owns and ends it."""
        return _popen_in(self.name, host, self.ns(host), argv, **popen_kwargs)

    def run(
        self, host: str, argv: Sequence[str], *, timeout: float = 10.0, **kw: Any
    ) -> subprocess.CompletedProcess:
        return _run_ns(self.name, host, self.ns(host), argv, timeout=timeout, **kw)

    def spawn(self, host: str, argv: Sequence[str], **popen_kwargs: Any) -> subprocess.Popen:
        """Start a long-running process in host's namespace and record its PID in the state file,
        so `down` ends it (SIGTERM, then SIGKILL after 1 s). It runs in a session of its own, and
        `down` signals that process group."""
        popen_kwargs.setdefault("start_new_session", True)
        proc = self.exec(host, argv, **popen_kwargs)
        _record_process(
            self.name, proc.pid, host, argv, group=bool(popen_kwargs["start_new_session"])
        )
        return proc

    def stop(self, proc: subprocess.Popen | int, grace: float = 1.0) -> None:
        """End a process started with `spawn` (only if the state file records it)."""
        pid = proc if isinstance(proc, int) else proc.pid
        with _locked_state(self.name) as state:
            entries = [e for e in state["processes"] if e["pid"] == pid]
            state["processes"] = [e for e in state["processes"] if e["pid"] != pid]
        for entry in entries:
            _end_process(entry, grace)
        if isinstance(proc, subprocess.Popen):
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=grace + 1)

    def down(self) -> float:
        return down(self.name)


def up(topology: Topology, name: str) -> LabHandle:
    """Build `topology` as lab `name`. On any failure everything built so far is removed and the
    error re-raised. Returns a LabHandle; `handle.up_seconds` is the build time."""
    from pyroute2 import IPRoute, netns  # imported here: topology-only users need no pyroute2

    t0 = time.monotonic()
    check_lab_name(name)
    if lab_namespaces(name) or read_state(name) is not None:
        raise LabError(f"lab {name!r} already exists; `fwlab down {name}` first")

    nodes = topology.nodes()
    host_ns = {host: ns_name(name, host) for host in nodes}
    segments = topology.segments()
    bridge_ns = {
        seg: bridge_ns_name(name, seg) for seg, members in segments.items() if len(members) > 2
    }
    all_ns = [*host_ns.values(), *bridge_ns.values()]

    with _locked_state(name) as state:
        state.update(
            status="building",
            namespaces=all_ns,
            created=time.time(),
            topology_file=str(topology.source) if topology.source else None,
            topology=topology.model_dump(mode="json"),
        )

    iprs: dict[str, Any] = {}
    try:
        for ns in all_ns:
            netns.create(ns)
        dns.write(topology, host_ns)  # before any process starts in the lab
        fw_host = topology.firewall.host
        _sysctl_all(
            {
                **{
                    ns: _FIREWALL_SYSCTLS if h == fw_host else _HOST_SYSCTLS
                    for h, ns in host_ns.items()
                },
                **{ns: _BRIDGE_SYSCTLS for ns in bridge_ns.values()},
            },
            optional=set(_BRIDGE_SYSCTLS),
        )
        for ns in all_ns:
            iprs[ns] = IPRoute(netns=ns, flags=0)  # flags=0: never create a namespace here

        # links: each veth created inside one lab namespace, peer placed in another one
        for seg, members in segments.items():
            if seg not in bridge_ns:
                (h1, if1), (h2, if2) = members
                _veth(iprs[host_ns[h1]], if1, host_ns[h2], if2, nodes[h1], nodes[h2])
                continue
            bns = bridge_ns[seg]
            bipr = iprs[bns]
            bipr.link("add", ifname="br0", kind="bridge")
            (br_idx,) = bipr.link_lookup(ifname="br0")
            for i, (host, ifname) in enumerate(members):
                port = f"p{i}"
                _veth(iprs[host_ns[host]], ifname, bns, port, nodes[host], None)
                (pidx,) = bipr.link_lookup(ifname=port)
                bipr.link("set", index=pidx, master=br_idx, state="up")
            bipr.link("set", index=br_idx, state="up")

        # addresses, links up, routes
        for host, node in nodes.items():
            ipr = iprs[host_ns[host]]
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
            for ifname, iface in node.interfaces.items():
                (idx,) = ipr.link_lookup(ifname=ifname)
                for addr in iface.addresses:
                    kw: dict[str, Any] = {}
                    if addr.version == 6:
                        kw["flags"] = IFA_F_NODAD
                    ipr.addr(
                        "add",
                        index=idx,
                        address=str(addr.ip),
                        prefixlen=addr.network.prefixlen,
                        **kw,
                    )
                ipr.link("set", index=idx, state="up")
            _routes(ipr, node, is_firewall=host == fw_host, default_dev=topology.firewall.default)
        # per-interface user sysctls need the interfaces, so they come last
        _sysctl_all(
            {host_ns[h]: {k: str(v) for k, v in n.sysctls.items()} for h, n in nodes.items()}
        )
    except BaseException:
        for ipr in iprs.values():
            with contextlib.suppress(Exception):
                ipr.close()
        iprs.clear()
        with contextlib.suppress(Exception):
            down(name)
        raise
    finally:
        for ipr in iprs.values():
            with contextlib.suppress(Exception):
                ipr.close()

    elapsed = time.monotonic() - t0
    with _locked_state(name) as state:
        state.update(status="up", up_seconds=elapsed)
    return LabHandle(name=name, topology=topology, namespaces=host_ns, up_seconds=elapsed)


def _veth(
    ipr: Any, ifname: str, peer_ns: str, peer_ifname: str, node: Host, peer_node: Host | None
) -> None:
    """Create veth `ifname` in ipr's namespace with its peer `peer_ifname` in `peer_ns`."""
    mtu = node.interfaces[ifname].mtu
    peer: dict[str, Any] = {"ifname": peer_ifname, "net_ns_fd": peer_ns}
    if mtu:
        peer["mtu"] = mtu
    kw: dict[str, Any] = {"mtu": mtu} if mtu else {}
    ipr.link("add", ifname=ifname, kind="veth", peer=peer, **kw)


def _routes(ipr: Any, node: Host, *, is_firewall: bool, default_dev: str | None) -> None:
    def oif(dev: str) -> int:
        return ipr.link_lookup(ifname=dev)[0]

    for route in node.routes:
        for net in route.destinations():
            kw: dict[str, Any] = {
                "dst": str(net),
                "family": socket.AF_INET if net.version == 4 else socket.AF_INET6,
            }
            if route.via is not None:
                kw["gateway"] = str(route.via)
            if route.dev is not None or route.via is None:
                kw["oif"] = oif(node.route_dev(route))
            ipr.route("add", **kw)
    if is_firewall and default_dev is not None:
        # the kernel's table agrees with Topology.firewall_routes(): default out of `default_dev`
        # (unless the file gave a default route of that family already)
        have = {n.version for r in node.routes for n in r.destinations() if n.prefixlen == 0}
        for net in (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0")):
            if net.version not in have:
                ipr.route(
                    "add",
                    dst=str(net),
                    oif=oif(default_dev),
                    family=socket.AF_INET if net.version == 4 else socket.AF_INET6,
                )


def down(name: str) -> float:
    """Tear lab `name` down: end the processes it recorded, delete every namespace with its
    prefix, remove its state directory. Safe on a half-built or already removed lab. Returns the
    seconds it took."""
    from pyroute2 import netns

    t0 = time.monotonic()
    check_lab_name(name)
    state = read_state(name) or {}
    end_processes(state)
    errors = []
    prefix = lab_prefix(name)
    # the state's list and what exists now (a crash may have left either without the other)
    targets = {n for n in state.get("namespaces", []) if n.startswith(prefix)}
    targets.update(lab_namespaces(name))
    for ns in sorted(targets):
        if not (NETNS_DIR / ns).exists():
            continue
        try:
            netns.remove(ns)  # umount + unlink, as `ip netns del`
        except OSError as exc:
            errors.append(f"{ns}: {exc}")
    dns.remove(sorted(targets | set(dns.lab_dirs(prefix))))
    remove_run_dir(name)
    if errors:
        raise LabError(f"lab {name!r}: could not remove " + "; ".join(errors))
    return time.monotonic() - t0


def end_processes(state: dict[str, Any]) -> None:
    """End every process the state records (and only those, checked by PID and start time)."""
    for entry in state.get("processes", []):
        with contextlib.suppress(Exception):
            _end_process(entry)


def remove_run_dir(name: str) -> None:
    """The lab's runtime directory, all but the build lock its holder removes (lablock.py)."""
    d = runtime.lab_dir(name)
    if d.exists():
        for p in d.iterdir():
            if p == runtime.build_lock_path(name):
                continue
            with contextlib.suppress(OSError):
                p.unlink()
        with contextlib.suppress(OSError):
            d.rmdir()


def list_labs() -> list[str]:
    """Labs that have a state directory or at least one namespace with the fwl- prefix."""
    names = set()
    if RUN_DIR.is_dir():
        names.update(p.name for p in RUN_DIR.iterdir() if LAB_NAME_RE.match(p.name))
    for ns in _existing_namespaces():
        m = re.match(r"^fwl-([a-z0-9]{1,20})-", ns)
        if m:
            names.add(m.group(1))
    return sorted(names)


def attach(name: str) -> LabHandle:
    """A handle on a running lab or attachment, rebuilt from its state file. The firewall's
    namespace and interfaces are the state's `attached` part when there is one (what `fwlab
    attach` and `up` record); a lab from before that has them in its topology."""
    state = read_state(name)
    if state is None or not (state.get("topology") or state.get("attached")):
        raise LabError(f"no lab {name!r} (no state in {runtime.lab_dir(name)})")
    attached = state.get("attached") or {}
    if not state.get("topology"):
        return LabHandle(name=name, topology=None, namespaces={ATTACHED_HOST: attached["netns"]},
                         up_seconds=state.get("up_seconds"), firewall_host=ATTACHED_HOST,
                         devices=dict(attached["ifaces"]))
    data = dict(state["topology"])
    if state.get("topology_file"):
        data["source"] = state["topology_file"]
    topology = Topology.model_validate(data)
    return LabHandle(
        name=name,
        topology=topology,
        namespaces={h: ns_name(name, h) for h in topology.nodes()},
        up_seconds=state.get("up_seconds"),
        devices=dict(attached.get("ifaces") or {}),
    )


def update_state(name: str, **fields: Any) -> dict[str, Any]:
    """Record facts about a running lab in its state file (the engine it runs, the rules it
    loaded), under the same lock as every other change; returns the state as written."""
    with _locked_state(name) as state:
        state.update(fields)
        return dict(state)
