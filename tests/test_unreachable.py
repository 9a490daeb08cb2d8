"""`fwlab check --exact`: rules no packet reaches because earlier rules cover them together,
which the one-rule shadow check cannot see; checked against the engine on random rule sets."""

from __future__ import annotations

import random
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fw.analysis.unreachable import find, unreachable
from fw.dsl import load_ruleset
from fw.engine.engine import Engine
from tests.cli import fwlab
from tests.test_diff_property import random_probe, rulesets
from tests.test_exposure_property import load_text

COVERED_TOGETHER = """mode stateful
policy forward drop
forward {
    ct state established,related accept
    ct state new,invalid tcp dport 1-1000 accept
    tcp dport 1001-65535 drop
    tcp dport 900-1100 accept
    tcp dport 0 accept
    iif lan tcp dport 900-1100 accept
}
"""


def lines_of(rules) -> list[int]:
    return [r.span.line for r in rules]


def test_rules_covered_by_several_earlier_rules_are_found() -> None:
    """900-1100 is covered by 1-1000 (new, invalid) and 1001-65535 (every state) together,
    and by the first rule for established and related; port 0 is reachable; the last rule is
    covered by one earlier rule alone (the shadow check names that one). (A rule testing two
    ports at once is an error of the language now: "this rule can never match".)"""
    assert lines_of(unreachable(load_text(COVERED_TOGETHER))) == [7, 9]


def test_in_the_example_files_no_rule_is_unreachable() -> None:
    """ipv6-host.fw's rule accepting neighbour discovery in `input` matters: the chains judge
    ND (untracked, as Linux), so it is reached."""
    root = Path(__file__).resolve().parent.parent
    found = {path.name: lines_of(unreachable(load_ruleset(str(path))))
             for path in sorted((root / "rules").glob("*.fw"))}
    assert {name: lines for name, lines in found.items() if lines} == {}


def test_check_exact_warns(tmp_path: Path) -> None:
    path = tmp_path / "covered.fw"
    path.write_text(COVERED_TOGETHER)
    plain, exact = fwlab("check", str(path)), fwlab("check", "--exact", str(path))
    assert "exact check" not in plain.out
    assert exact.out.count("exact check") == 1 and f"{path}:7:5" in exact.out
    assert f"{path}:9:5" in exact.out  # the shadow check's own warning, not repeated


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rulesets(), st.integers(0, 2**32))
def test_no_packet_reaches_a_rule_reported_unreachable(text: str, seed: int) -> None:
    ruleset = load_text(text)
    never = {id(r) for r in unreachable(ruleset)}
    rng = random.Random(seed)
    for _ in range(60):
        decision = Engine(ruleset, seed=0).process(random_probe(rng).packet())
        assert decision.rule is None or id(decision.rule) not in never, (text, decision)


def test_the_covering_rules_are_named() -> None:
    """900-1100 is taken by line 4 (established, related), line 5 (new and invalid up to 1000)
    and line 6 (from 1001): all three are needed, so all three are named. Line 9 is covered by
    line 7 alone too, but it is the rules that take its packets that are named (line 7 takes
    none; the shadow check names it)."""
    found = {u.rule.span.line: lines_of(u.covering) for u in find(load_text(COVERED_TOGETHER))}
    assert found == {7: [4, 5, 6], 9: [4, 5, 6]}


def test_a_covering_set_is_thinned_to_the_rules_needed() -> None:
    """Line 4 takes port 80 first, but line 5 covers all of line 6 alone: line 5 is named."""
    text = ("mode stateless\npolicy forward drop\nforward {\n    tcp dport 80 accept\n"
            "    tcp dport 1-1000 drop\n    tcp dport 10-100 accept\n}\n")
    assert [lines_of(u.covering) for u in find(load_text(text))] == [[5]]


def test_check_exact_names_the_covering_rules(tmp_path: Path) -> None:
    path = tmp_path / "covered.fw"
    path.write_text(COVERED_TOGETHER)
    out = fwlab("check", "--exact", str(path)).out
    assert "rules at lines 4, 5 and 6 take every packet it would (exact check)" in out
