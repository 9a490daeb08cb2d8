"""Warnings for rules that can never match because an earlier rule takes all their packets.

Exactness is traded for speed and no false alarms: a rule is reported only when one earlier rule
with a verdict covers it field by field. Earlier rules are indexed by the fields they test and by
their single-value fields, so a 10,000-rule file is checked without comparing every pair.
"""

from __future__ import annotations

from collections import defaultdict

from fw.analysis.fields import FieldTest, field_test, implied_protocols, test_covers
from fw.analysis.intervals import IntervalSet
from fw.dsl.diagnostics import Collector
from fw.model import CHAINS, Rule, RuleSet


def rule_tests(rule: Rule) -> dict[tuple, list[FieldTest]]:
    tests: dict[tuple, list[FieldTest]] = defaultdict(list)
    for match in rule.matches:
        test = field_test(match)
        tests[test.key].append(test)
        proto = implied_protocols(match)
        if proto is not None:
            tests[("proto",)].append(FieldTest(("proto",), False, IntervalSet.span(proto, proto)))
    return tests


def point_value(test: FieldTest):
    values = test.values
    return values.ranges()[0][0] if isinstance(values, IntervalSet) else next(iter(values))


def covers(earlier: dict, later: dict) -> bool:
    return all(
        any(test_covers(a, b) for b in later.get(key, ()))
        for key, tests in earlier.items()
        for a in tests
    )


class ShadowIndex:
    """Earlier rules with a verdict, bucketed by (fields tested, single-value fields)."""

    def __init__(self) -> None:
        self.buckets: dict[tuple, dict[tuple, list]] = defaultdict(lambda: defaultdict(list))

    def add(self, rule: Rule, tests: dict) -> None:
        points = tuple(sorted(k for k, ts in tests.items() if any(t.is_point() for t in ts)))
        values = tuple(point_value(next(t for t in tests[k] if t.is_point())) for k in points)
        self.buckets[(frozenset(tests), points)][values].append((rule, tests))

    def first_cover(self, tests: dict) -> Rule | None:
        found: Rule | None = None
        for (keys, points), by_value in self.buckets.items():
            values = self.point_values(tests, points) if keys <= tests.keys() else None
            for rule, earlier in by_value.get(values, ()) if values is not None else ():
                if covers(earlier, tests) and (found is None or rule.index < found.index):
                    found = rule
                    break
        return found

    @staticmethod
    def point_values(tests: dict, points: tuple) -> tuple | None:
        values = []
        for key in points:
            point = next((t for t in tests[key] if t.is_point()), None)
            if point is None:
                return None
            values.append(point_value(point))
        return tuple(values)


def shadow_warnings(ruleset: RuleSet, out: Collector) -> None:
    for chain in CHAINS:
        index = ShadowIndex()
        for rule in ruleset.chains[chain]:
            tests = rule_tests(rule)
            earlier = index.first_cover(tests)
            if earlier is not None:
                out.warning(shadow_message(earlier, rule), rule.span)
            if rule.verdict is not None:
                index.add(rule, tests)


def shadow_message(earlier: Rule, rule: Rule) -> str:
    where = f"line {earlier.span.line}" if earlier.span else f"rule {earlier.index + 1}"
    if earlier.span and rule.span and earlier.span.file != rule.span.file:
        where = f"{earlier.span.file}:{earlier.span.line}"
    return f"rule can never match: the rule at {where} ('{earlier.text}') matches all its packets"
