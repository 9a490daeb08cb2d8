"""`fwlab exposure`: the static results for every example (golden), the figures the issue asks
for, the space operations, the command's table, JSON, chart and errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from fw.analysis import space
from fw.analysis.exposure import SYN, analyse
from fw.analysis.exposure_text import exposure_json
from fw.cli import app
from fw.core import ranges
from fw.core.fields import FIELDS, F
from fw.dsl import load_ruleset
from fw.engine.engine import Engine
from tests.golden import compare

ROOT = Path(__file__).resolve().parent.parent
RULES = sorted((ROOT / "rules").glob("*.fw"))
EPHEMERAL = ["32768-60999"]
EVERY_LAN = ["192.0.2.0/24", "2001:db8:1::/64"]


def exposure_of(name: str):
    return analyse(load_ruleset(str(ROOT / "rules" / name)))


@pytest.mark.parametrize("path", RULES, ids=lambda p: p.stem)
def test_golden_static_exposure(path: Path, in_repo: Path) -> None:
    exposure = analyse(load_ruleset(str(path.relative_to(ROOT))))
    text = json.dumps({"mode": exposure.mode, "static": exposure_json(exposure)}, indent=1)
    compare(ROOT / "tests/golden/exposure" / f"{path.stem}.json", text + "\n")


def test_stateless_web_opens_the_ephemeral_range_to_anyone_with_the_right_source_port() -> None:
    e = exposure_of("stateless-web.fw")
    syn, udp = exposure_json(e)["tcp_syn"], exposure_json(e)["udp"]
    assert syn["count"] == 28_232 and syn["ranges"] == EPHEMERAL
    assert syn["addresses"] == EVERY_LAN
    assert syn["sources"] == ["0.0.0.0/0", "::/0"]
    assert syn["source_ports"] == ["80", "443"]
    assert udp["count"] == 28_232 and udp["ranges"] == EPHEMERAL
    assert udp["source_ports"] == ["53"] and udp["addresses"] == EVERY_LAN
    assert e["tcp_syn"].ephemeral_share() == 1.0
    assert e["icmp"].count == 0


def test_stateful_web_exposes_one_port_through_the_port_forward() -> None:
    e = exposure_of("stateful-web.fw")
    out = exposure_json(e)
    for name in ("tcp_syn", "tcp_any"):
        assert out[name]["count"] == 1
        assert out[name]["ranges"] == ["80"]
        assert out[name]["addresses"] == ["192.0.2.10"]
        [forward] = out[name]["forwards"]
        assert forward["to"] == "192.0.2.10:80" and forward["ports"] == ["8080"]
    assert out["udp"]["count"] == 0 and out["icmp"]["count"] == 0
    probe = e.witness("tcp_syn", 4, "192.0.2.10", 80)
    assert probe is not None and probe.flags & SYN


def test_the_port_forward_is_what_the_engine_does() -> None:
    e = exposure_of("stateful-web.fw")
    ruleset = load_ruleset(str(ROOT / "rules/stateful-web.fw"))
    from fw.analysis.exposure import Probe

    through = Probe(4, 6, "198.51.100.66", "203.0.113.1", 40000, 8080, SYN)
    other = Probe(4, 6, "198.51.100.66", "203.0.113.1", 40000, 8081, SYN)
    for probe, expected in ((through, True), (other, False)):
        decision = Engine(ruleset).process(probe.packet(), iif="wan")
        engine = decision.verdict == "accept" and decision.oif == "lan"
        assert engine == expected == e.accepts(probe)


def test_stateless_ack_stops_syns_but_not_ack_probes() -> None:
    e = exposure_of("stateless-ack.fw")
    assert e["tcp_syn"].count == 0 and not e["tcp_syn"].exposed
    assert e["tcp_any"].count == 28_232
    assert exposure_json(e)["tcp_any"]["ranges"] == EPHEMERAL


def test_inside_prefix_and_interfaces() -> None:
    ruleset = load_ruleset(str(ROOT / "rules/stateless-web.fw"))
    narrow = analyse(ruleset, inside="192.0.2.0/28")
    assert exposure_json(narrow)["tcp_syn"]["addresses"] == ["192.0.2.0/28"]
    from fw.analysis.exposure import ExposureError

    with pytest.raises(ExposureError, match="--inside dmz"):
        analyse(ruleset, inside="dmz")
    with pytest.raises(ExposureError, match="--outside eth9"):
        analyse(ruleset, outside="eth9")


def test_space_operations() -> None:
    a = ((0, 9), (20, 29), (40, 49))
    assert ranges.inter(a, ((5, 25),)) == ((5, 9), (20, 25))
    assert ranges.sub(a, ((5, 25),)) == ((0, 4), (26, 29), (40, 49))
    assert ranges.sub(a, ((0, 100),)) == ()
    assert ranges.covers(a, ((21, 28),)) and not ranges.covers(a, ((8, 21),))
    assert ranges.overlaps(a, ((10, 19), (45, 45))) and not ranges.overlaps(a, ((10, 19),))
    assert ranges.complement(a, 0, 60) == ((10, 19), (30, 39), (50, 60))
    assert ranges.norm([(5, 6), (0, 4), (8, 9)]) == ((0, 6), (8, 9))
    box = space.make_box(**{f: ((0, 9),) for f in FIELDS})
    rule = ((F["dport"], ((3, 5),)), (F["saddr"], ((0, 0),)))
    pieces = space.difference(box, rule)
    assert sum(ranges.count(p[F["dport"]]) * ranges.count(p[F["saddr"]])
               for p in pieces) == 100 - 3


runner = CliRunner()


def test_cli_table_json_and_chart(tmp_path: Path, in_repo: Path) -> None:
    files = ["rules/stateless-web.fw", "rules/stateful-web.fw"]
    result = runner.invoke(app, ["exposure", *files])
    assert result.exit_code == 0, result.output
    assert "28,232" in result.output and "8080 → 192.0.2.10:80" in result.output
    assert "sender's choice" in result.output
    result = runner.invoke(app, ["exposure", *files, "--json"])
    data = json.loads(result.output)
    assert [r["file"] for r in data["rulesets"]] == files
    assert data["rulesets"][0]["static"]["tcp_syn"]["count"] == 28_232
    assert data["rulesets"][1]["static"]["tcp_syn"]["count"] == 1
    assert data["rulesets"][0]["live"] is None
    assert set(data["rulesets"][0]["static"]) == {"tcp_syn", "tcp_any", "udp", "icmp"}
    assert "types" in data["rulesets"][0]["static"]["icmp"]
    for suffix in (".png", ".svg"):
        chart = tmp_path / f"exposure{suffix}"
        result = runner.invoke(app, ["exposure", *files, "--plot", str(chart)])
        assert result.exit_code == 0, result.output
        assert chart.stat().st_size > 1000 and str(chart) in result.output


@pytest.mark.parametrize("args, message", [
    (["rules/stateful-web.fw", "--inside", "dmz"], "--inside dmz"),
    (["rules/stateful-web.fw", "--outside", "eth9"], "--outside eth9"),
    (["rules/stateful-web.fw", "--plot", "x.jpg"], ".png or .svg"),
    (["no-such-file.fw"], "cannot read the file"),
    (["rules/stateful-web.fw", "--live", "--ports", "9-1"], "--ports '9-1'"),
])
def test_cli_errors_are_one_line(args: list[str], message: str, in_repo: Path) -> None:
    from fw.errors import FwlabError

    result = runner.invoke(app, ["exposure", *args])
    assert result.exit_code != 0
    assert isinstance(result.exception, FwlabError) and message in str(result.exception)
