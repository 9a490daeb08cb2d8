"""The topology model (no root needed) and real labs built with pyroute2 (marker `lab`)."""

from __future__ import annotations

import ipaddress
import json
import subprocess
import time
from pathlib import Path

import pytest
from pyroute2 import netns as pyr_netns

from fw.lab import netns as labns
from fw.lab.topology import (
    TopologyError,
    default_topology,
    default_topology_path,
    load_topology,
    parse_topology,
)

from .conftest import new_lab_name, ping

# -- topology files (no root) -----------------------------------------------------------------

TINY = {
    "firewall": {
        "interfaces": {
            "lan": {"segment": "lan", "addresses": ["192.0.2.1/24"]},
            "wan": {"segment": "wan", "addresses": ["203.0.113.1/24"]},
        }
    },
    "hosts": {
        "a": {"interfaces": {"eth0": {"segment": "lan", "addresses": ["192.0.2.2/24"]}}},
        "b": {"interfaces": {"eth0": {"segment": "wan", "addresses": ["203.0.113.2/24"]}}},
    },
}


def test_default_topology_shape() -> None:
    t = default_topology()
    assert t.source == default_topology_path()
    assert t.firewall.host == "fw"
    assert set(t.hosts) == {"client", "web", "server", "attacker"}
    assert t.segments() == {
        "lan": [("fw", "lan"), ("client", "eth0"), ("web", "eth0")],
        "wan": [("fw", "wan"), ("server", "eth0"), ("attacker", "eth0")],
    }
    rules = default_topology_path().parent.parent / "rules" / "stateful-web.fw"
    assert t.rules_file == rules.resolve()
    assert t.non_documentation_addresses() == []


def test_firewall_routes_and_addresses() -> None:
    t = default_topology()
    ip = ipaddress.ip_address
    assert t.firewall_addresses() == {
        "lan": [ip("192.0.2.1"), ip("2001:db8:1::1")],
        "wan": [ip("203.0.113.1"), ip("2001:db8:2::1")],
    }
    routes = t.firewall_routes()
    assert (ipaddress.ip_network("192.0.2.0/24"), "lan") in routes
    assert (ipaddress.ip_network("0.0.0.0/0"), "wan") in routes
    assert (ipaddress.ip_network("::/0"), "wan") in routes
    # longest prefix first within a family
    v4 = [n.prefixlen for n, _ in routes if n.version == 4]
    assert v4 == sorted(v4, reverse=True)
    assert t.route_lookup("192.0.2.77") == "lan"
    assert t.route_lookup("198.51.100.5") == "wan"
    assert t.route_lookup("2001:db8:1::99") == "lan"
    assert t.route_lookup("2001:db8:ffff::1") == "wan"


@pytest.mark.parametrize(
    ("patch", "message"),
    [
        (
            lambda d: d["hosts"]["a"]["interfaces"]["eth0"].update(addresses=["192.0.2.300/24"]),
            "x.yaml: hosts.a.interfaces.eth0.addresses[0]: '192.0.2.300/24' is not an IP "
            "interface address",
        ),
        (
            lambda d: d["hosts"]["a"].update(routes=[{"to": "default", "via": "198.51.100.1"}]),
            "x.yaml: hosts.a.routes[0].via: gateway 198.51.100.1 is not on a connected network",
        ),
        (
            lambda d: d["hosts"]["a"]["interfaces"]["eth0"].update(colour="red"),
            "x.yaml: hosts.a.interfaces.eth0.colour: unknown key",
        ),
        (
            lambda d: d["hosts"]["a"].update(sysctls={"kernel.panic": 1}),
            "x.yaml: hosts.a.sysctls['kernel.panic']: only net.* sysctls",
        ),
        (
            lambda d: d["hosts"]["b"]["interfaces"]["eth0"].update(segment="dmz"),
            "x.yaml: segment 'wan' has one member",
        ),
        (
            lambda d: d["hosts"]["b"]["interfaces"]["eth0"].update(addresses=["192.0.2.1/24"]),
            "x.yaml: address 192.0.2.1 is on both fw.lan and b.eth0",
        ),
        (
            lambda d: d["firewall"].update(default="dmz"),
            "x.yaml: firewall.default: 'dmz' is not an interface of the firewall",
        ),
        (lambda d: d.pop("firewall"), "x.yaml: firewall: required key is missing"),
        (
            lambda d: d["hosts"]["a"].update(interfaces={"a-very-long-ifname": {"segment": "lan"}}),
            "x.yaml: hosts.a.interfaces.a-very-long-ifname: not an interface name",
        ),
    ],
)
def test_validation_errors_are_one_line(patch, message: str) -> None:
    data = json.loads(json.dumps(TINY))
    patch(data)
    with pytest.raises(TopologyError) as exc:
        parse_topology(data, "x.yaml")
    text = str(exc.value)
    assert "\n" not in text
    assert text.startswith(message), text


def test_load_topology_file_errors(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match=r"missing\.yaml: cannot read"):
        load_topology(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("firewall: [unclosed\n")
    with pytest.raises(TopologyError, match=r"bad\.yaml:\d+:\d+: not valid YAML"):
        load_topology(bad)
    rel = tmp_path / "rel.yaml"
    rel.write_text(json.dumps({**TINY, "firewall": {**TINY["firewall"], "rules": "r/x.fw"}}))
    assert load_topology(rel).rules_file == (tmp_path / "r/x.fw").resolve()


def test_lab_names_cannot_overlap() -> None:
    for bad in ("a-b", "A", "", "x" * 21, "../x"):
        with pytest.raises(labns.LabError):
            labns.ns_name(bad, "fw")
    assert labns.ns_name("t1", "client") == "fwl-t1-client"
    assert labns.bridge_ns_name("t1", "wan") == "fwl-t1-br.wan"


# -- real labs --------------------------------------------------------------------------------


@pytest.mark.lab
def test_default_lab_comes_up_and_forwards(lab: labns.LabHandle) -> None:
    assert sorted(labns.lab_namespaces(lab.name)) == sorted(
        [f"fwl-{lab.name}-{h}" for h in ("fw", "client", "web", "server", "attacker")]
        + [f"fwl-{lab.name}-br.wan", f"fwl-{lab.name}-br.lan"]
    )
    # neighbours on each segment, the bridge, and plain kernel forwarding (no queue yet)
    assert ping(lab, "client", "192.0.2.1")
    assert ping(lab, "client", "192.0.2.10")
    assert ping(lab, "fw", "203.0.113.10")
    assert ping(lab, "attacker", "203.0.113.10")
    assert ping(lab, "client", "203.0.113.10")
    assert ping(lab, "client", "2001:db8:1::1")
    assert ping(lab, "client", "2001:db8:2::10")
    assert ping(lab, "attacker", "2001:db8:1::2")
    fw = lab.run("fw", ["sysctl", "-n", "net.ipv4.ip_forward", "net.ipv6.conf.lan.forwarding"])
    assert fw.stdout.split() == ["1", "1"]
    # nothing of the lab is in the root namespace
    root = subprocess.run(["ip", "-o", "link"], capture_output=True, text=True, timeout=5).stdout
    assert f"fwl-{lab.name}" not in root


@pytest.mark.lab
def test_up_and_down_are_fast(lab_factory) -> None:
    name = new_lab_name()
    t0 = time.monotonic()
    lab = lab_factory(name=name)
    up_s = time.monotonic() - t0
    down_s = labns.down(name)
    print(
        f"\nlab up {up_s * 1000:.0f} ms (internal {lab.up_seconds * 1000:.0f} ms), "
        f"down {down_s * 1000:.0f} ms"
    )
    assert up_s < 5.0  # design target: well under 2 s
    assert down_s < 5.0
    assert labns.lab_namespaces(name) == []


@pytest.mark.lab
def test_two_labs_at_once(lab_factory) -> None:
    a = lab_factory()
    b = lab_factory()
    assert set(labns.lab_namespaces(a.name)).isdisjoint(labns.lab_namespaces(b.name))
    assert {a.name, b.name} <= set(labns.list_labs())
    assert ping(a, "client", "203.0.113.10")
    assert ping(b, "client", "203.0.113.10")
    labns.down(a.name)
    assert labns.lab_namespaces(a.name) == []
    assert ping(b, "client", "2001:db8:2::10")
    assert a.name not in labns.list_labs()


@pytest.mark.lab
def test_up_refuses_an_existing_lab(lab: labns.LabHandle) -> None:
    with pytest.raises(labns.LabError, match="already exists"):
        labns.up(default_topology(), lab.name)
    assert ping(lab, "client", "192.0.2.1")  # the running lab was not touched


@pytest.mark.lab
def test_down_clears_a_half_built_lab() -> None:
    name = new_lab_name()
    try:
        # namespaces with the prefix, a state file naming one more that was never created
        pyr_netns.create(f"fwl-{name}-fw")
        pyr_netns.create(f"fwl-{name}-client")
        subprocess.run(
            [
                "ip",
                "-n",
                f"fwl-{name}-fw",
                "link",
                "add",
                "lan",
                "type",
                "veth",
                "peer",
                "name",
                "eth0",
                "netns",
                f"fwl-{name}-client",
            ],
            check=True,
            timeout=5,
        )
        state = labns.RUN_DIR / name
        state.mkdir(parents=True)
        (state / "lab.json").write_text(
            json.dumps(
                {
                    "name": name,
                    "status": "building",
                    "processes": [],
                    "namespaces": [f"fwl-{name}-fw", f"fwl-{name}-client", f"fwl-{name}-server"],
                }
            )
        )
        assert name in labns.list_labs()
        labns.down(name)
        assert labns.lab_namespaces(name) == []
        assert not state.exists()
        labns.down(name)  # idempotent
    finally:
        labns.down(name)


@pytest.mark.lab
def test_failed_up_leaves_nothing() -> None:
    # the last step of `up` (per-interface sysctls) fails on a key this kernel does not have
    data = default_topology().model_dump(mode="json")
    data["hosts"]["client"]["sysctls"] = {"net.ipv4.conf.eth0.no_such_sysctl": 1}
    topo = parse_topology(data, "broken.yaml")
    name = new_lab_name()
    try:
        with pytest.raises(labns.LabError, match="sysctl"):
            labns.up(topo, name)
        assert labns.lab_namespaces(name) == []
        assert not (labns.RUN_DIR / name).exists()
    finally:
        labns.down(name)


@pytest.mark.lab
def test_spawned_processes_end_with_the_lab(lab_factory) -> None:
    lab = lab_factory()
    proc = lab.spawn("server", ["sleep", "30"])
    other = subprocess.Popen(["sleep", "30"])  # not the lab's: must survive `down`
    try:
        state = json.loads((labns.RUN_DIR / lab.name / "lab.json").read_text())
        assert [p["pid"] for p in state["processes"]] == [proc.pid]
        labns.down(lab.name)
        assert proc.wait(timeout=5) is not None
        assert other.poll() is None
    finally:
        other.kill()
        other.wait(timeout=5)


@pytest.mark.lab
def test_attach_and_exec(lab: labns.LabHandle) -> None:
    again = labns.attach(lab.name)
    assert again.namespaces == lab.namespaces
    assert again.topology.firewall_routes() == lab.topology.firewall_routes()
    out = labns.run_in(lab.name, "server", ["ip", "-br", "addr", "show", "eth0"]).stdout
    assert "203.0.113.10/24" in out and "2001:db8:2::10/64" in out
    with pytest.raises(labns.LabError, match="no host"):
        labns.exec_in(lab.name, "nobody", ["true"])


@pytest.mark.lab
def test_custom_topology_with_a_lan_bridge_and_static_route(lab_factory) -> None:
    """Three hosts on the LAN (a bridge), a static route on the firewall behind a router host."""
    topo = parse_topology(
        {
            "firewall": {
                "default": "wan",
                "interfaces": {
                    "lan": {"segment": "lan", "addresses": ["192.0.2.1/25"]},
                    "wan": {"segment": "wan", "addresses": ["203.0.113.1/24"], "mtu": 1400},
                },
                "routes": [{"to": "198.51.100.0/24", "via": "192.0.2.126"}],
            },
            "hosts": {
                "a": {
                    "interfaces": {"eth0": {"segment": "lan", "addresses": ["192.0.2.2/25"]}},
                    "routes": [{"to": "default", "via": "192.0.2.1"}],
                },
                "router": {
                    "interfaces": {
                        "eth0": {"segment": "lan", "addresses": ["192.0.2.126/25"]},
                        "inner": {"segment": "inner", "addresses": ["198.51.100.1/24"]},
                    },
                    "routes": [{"to": "default", "via": "192.0.2.1"}],
                    "sysctls": {"net.ipv4.ip_forward": 1},
                },
                "deep": {
                    "interfaces": {"eth0": {"segment": "inner", "addresses": ["198.51.100.2/24"]}},
                    "routes": [{"to": "default", "via": "198.51.100.1"}],
                },
                "c": {"interfaces": {"eth0": {"segment": "lan", "addresses": ["192.0.2.3/25"]}}},
                "out": {
                    "interfaces": {
                        "eth0": {"segment": "wan", "addresses": ["203.0.113.9/24"], "mtu": 1400}
                    },
                    "routes": [{"to": "default", "via": "203.0.113.1"}],
                },
            },
        },
        "custom.yaml",
    )
    assert topo.route_lookup("198.51.100.2") == "lan"
    lab = lab_factory(topo)
    assert ping(lab, "c", "192.0.2.2")
    assert ping(lab, "out", "198.51.100.2")
    mtu = lab.run("fw", ["cat", "/sys/class/net/wan/mtu"]).stdout.strip()
    assert mtu == "1400"
