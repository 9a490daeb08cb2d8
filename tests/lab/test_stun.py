"""RFC 4787 NAT behaviours as a real RFC 5780 client sees them.

For each mapping/filtering pair a lab (tests/lab/stun.yaml) is brought up with a rule file that
masquerades the LAN with that behaviour; coturn's `turnserver` runs on the `stun` host with its
primary (203.0.113.20) and alternate (203.0.113.21) addresses, ports 3478 and 3479 (RFC 5780's
OTHER-ADDRESS), and coturn's `turnutils_natdiscovery` runs on the client behind the firewall. The
behaviour it reports must be the one the rule file chose.

Needs the Debian package `coturn` (scripts/setup installs it); skipped without it."""

from __future__ import annotations

import json
import re
import shutil
import time
from pathlib import Path

import pytest

from fw.lab import netns as labns

from .conftest import HERE, CliLab

pytestmark = [
    pytest.mark.lab,
    pytest.mark.skipif(
        shutil.which("turnutils_natdiscovery") is None or shutil.which("turnserver") is None,
        reason="needs coturn's turnserver and turnutils_natdiscovery (apt-get install coturn)",
    ),
]

TOPOLOGY = HERE / "stun.yaml"
PRIMARY, ALTERNATE = "203.0.113.20", "203.0.113.21"
PORT, ALT_PORT = 3478, 3479  # coturn's alternate port is the listening port + 1

EI, AD, APD = "endpoint-independent", "address-dependent", "address-port-dependent"
# the words turnutils_natdiscovery prints for each behaviour
WORDS = {
    EI: "Endpoint Independent",
    AD: "Address Dependent",
    APD: "Address and Port Dependent",
}

RULES = """\
mode stateful

policy input drop
policy forward drop
policy output accept

forward {{
    ct state established,related accept
    ct state invalid drop
    iif lan accept
}}

nat {{
    oif wan masquerade mapping {mapping} filtering {filtering}
}}
"""


def start_stun_server(lab: CliLab) -> None:
    """turnserver on the stun host, both addresses, STUN only in effect (no auth, no TLS, no CLI);
    started with `fwlab exec -d`, so `fwlab down` ends it. Waits until its four UDP sockets
    (primary and alternate address, each on the primary and alternate port) are bound."""
    run_dir = labns.RUN_DIR / lab.name
    res = lab.cli(
        "exec", "-d", "stun", "--",
        "turnserver", "-n", "--no-cli", "--log-file", "stdout", "--simple-log",
        "--listening-ip", PRIMARY, "--listening-ip", ALTERNATE,
        "--listening-port", str(PORT), "--alt-listening-port", str(ALT_PORT),
        "--no-auth", "--realm", "fwlab", "--no-tls", "--no-dtls", "--no-tcp-relay",
        "--pidfile", str(run_dir / "turnserver.pid"),
        timeout=15,
    )
    assert res.returncode == 0, res.stderr
    wanted = {f"{ip}:{port}" for ip in (PRIMARY, ALTERNATE) for port in (PORT, ALT_PORT)}
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        out = lab.run("stun", ["ss", "-Hlun"], timeout=5).stdout
        bound = {field for line in out.splitlines() for field in line.split()[3:4]}
        if wanted <= bound:
            return
        time.sleep(0.1)
    log = run_dir / "stun-turnserver.log"
    tail = log.read_text(errors="replace")[-2000:] if log.exists() else "(no log)"
    raise AssertionError(f"turnserver did not bind {sorted(wanted)}:\n{tail}")


def discover(lab: CliLab, flag: str) -> tuple[str, str]:
    """Run turnutils_natdiscovery -m or -f from the client against the primary address: its
    verdict line and its whole output."""
    res = lab.run("client", ["turnutils_natdiscovery", flag, "-p", str(PORT), PRIMARY], timeout=30)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out
    # without OTHER-ADDRESS (server not in RFC 5780 mode) the client prints no verdict at all
    assert f"Other addr: : {ALTERNATE}:{ALT_PORT}" in out, f"no RFC 5780 OTHER-ADDRESS:\n{out}"
    verdicts = re.findall(r"^(No NAT!.*|NAT with .*!)$", out, re.M)
    assert len(verdicts) == 1, f"expected one verdict:\n{out}"
    return verdicts[0], out


# all nine pairs: each behaviour of one kind under each behaviour of the other
CASES = [(m, f) for m in (EI, AD, APD) for f in (EI, AD, APD)]
# mappings the -m run makes for its one socket: EI one (tests I and II share it), AD two (test III
# reuses test II's, same address), APD three
MAPPINGS = {EI: 1, AD: 2, APD: 3}
# the -f run's test II asks for an answer from the alternate address and port, test III from the
# primary address and alternate port: what each filtering behaviour must keep out
BLOCKED = {
    EI: set(),
    AD: {(ALTERNATE, ALT_PORT)},
    APD: {(ALTERNATE, ALT_PORT), (PRIMARY, ALT_PORT)},
}


@pytest.mark.parametrize(("mapping", "filtering"), CASES,
                         ids=[f"map-{m}-filter-{f}" for m, f in CASES])
def test_natdiscovery_reports_the_chosen_behaviour(
    cli_lab, tmp_path: Path, mapping: str, filtering: str
) -> None:
    rules = tmp_path / "stun.fw"
    rules.write_text(RULES.format(mapping=mapping, filtering=filtering))
    lab = cli_lab(str(TOPOLOGY), "--rules", str(rules))
    start_stun_server(lab)

    found, out = discover(lab, "-m")
    assert found == f"NAT with {WORDS[mapping]} Mapping!", out
    # and the engine's table agrees: the mappings of the client socket the -m run used
    local = re.search(r"Local addr: : 0\.0\.0\.0:(\d+)", out)
    assert local, out
    port = local.group(1)
    res = lab.cli("nat", "--json")
    assert res.returncode == 0, res.stderr
    used = [m for m in json.loads(res.stdout) if m["inside"] == f"192.0.2.2:{port}"]
    assert len(used) == MAPPINGS[mapping], used
    assert all(m["mapping"] == mapping and m["filtering"] == filtering for m in used), used
    found, out = discover(lab, "-f")
    assert found == f"NAT with {WORDS[filtering]} Filtering!", out
    # the answers the client waited for in vain were dropped by the engine (they are addressed to
    # the firewall's own address, so the input policy drops what no mapping lets in)
    outside = re.search(r"UDP reflexive addr: 203\.0\.113\.1:(\d+)", out)
    assert outside, out
    dropped = {
        (e["packet"]["src"], e["packet"]["sport"])
        for e in lab.log_events()
        if e["event"] == "drop" and e["packet"].get("dport") == int(outside.group(1))
    }
    assert dropped == BLOCKED[filtering], dropped
