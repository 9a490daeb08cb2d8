"""Round trip: import(export(F)) judges every packet as F does, for every file in rules/ (and
the export tests' extra files).

export(F) as nft lists it is stored in tests/golden/export/F.json (tests/lab keeps it equal to
what the kernel lists after loading F.nft). Thousands of generated packets (tests/packet_mix.py:
TCP conversations with in- and out-of-window segments, UDP, ICMP echo and errors, IPv4 and IPv6,
every hook, NAT'd flows answered at their translated address) go through an engine for F and
one for the imported file; verdict, state, chain, deciding rule, NAT translation, the packet as
it leaves, a reject's reply and log prefixes must all agree."""

from __future__ import annotations

from pathlib import Path

import pytest

from fw.dsl import load_ruleset
from fw.engine.engine import Engine
from fw.export.nft_import import import_nft
from tests.packet_mix import Mix

ROOT = Path(__file__).resolve().parent.parent
RULES = [*sorted((ROOT / "rules").glob("*.fw")),
         *sorted((ROOT / "tests/golden/export-extra").glob("*.fw"))]
PACKETS = 3000


def round_tripped(path: Path, tmp_path: Path) -> Path:
    golden = ROOT / "tests/golden/export" / f"{path.stem}.json"
    listed = (golden if golden.exists() else path.with_suffix(".json")).read_text()
    result = import_nft(listed, f"{path.stem}.json")
    assert result.skipped == []
    out = tmp_path / f"{path.stem}.fw"
    out.write_text(result.text)
    return out


@pytest.mark.parametrize("path", RULES, ids=lambda p: p.stem)
def test_import_of_export_judges_like_the_original(path: Path, tmp_path: Path) -> None:
    again = round_tripped(path, tmp_path)
    engines = [Engine(load_ruleset(str(p)), seed=0) for p in (path, again)]
    results = Mix(seed=sum(map(ord, path.stem))).run(engines, PACKETS)
    differing = [(i, a, b) for i, (a, b) in enumerate(results) if a != b]
    assert differing == [], f"{len(differing)} of {PACKETS} packets differ; first: {differing[0]}"
    verdicts = {r[0][0] for r in results}
    assert "accept" in verdicts and "drop" in verdicts  # the mix reaches both sides of F
    if engines[0].ruleset.stateful:
        states = {r[0][1] for r in results}
        assert {"new", "established", "invalid"} <= states
