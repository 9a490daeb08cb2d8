"""Warnings for rules that can never match because an earlier rule takes all their packets.

Exactness is traded for speed and no false alarms: a rule is reported only when one earlier rule
with a verdict covers it field by field. Earlier rules are indexed by the fields they test and by
their single-value fields, so a 10,000-rule file is checked without comparing every pair.
"""

from __future__ import annotations

from collections import defaultdict

from fw.core.fields import accepted_values, implied_protocol, interface_ids
from fw.core.ranges import IntervalSet
from fw.dsl.diagnostics import Collector
from fw.model import CHAINS, Rule, RuleSet

Fields = dict[str, IntervalSet]


def rule_fields(rule: Rule, ifaces: dict[str, int]) -> Fields:
    """What each field a rule tests may hold, in the classifier's own encoding (negation
    applied, several tests of one field intersected): covering is then set inclusion."""
    fields: Fields = {}
    for match in rule.matches:
        name, values = accepted_values(match, ifaces)
        fields[name] = fields[name] & values if name in fields else values
        proto = implied_protocol(match)
        if proto is not None:
            implied = IntervalSet.span(proto, proto)
            fields["proto"] = fields["proto"] & implied if "proto" in fields else implied
    return fields


def covers(earlier: Fields, later: Fields) -> bool:
    """Every packet the later rule matches, the earlier one matches too (field by field; a
    field only the earlier rule tests is never assumed covered)."""
    return all(name in later and values.issuperset(later[name])
               for name, values in earlier.items())


class ShadowIndex:
    """Earlier rules with a verdict, bucketed by (fields tested, single-value fields)."""

    def __init__(self) -> None:
        self.buckets: dict[tuple, dict[tuple, list]] = defaultdict(lambda: defaultdict(list))

    def add(self, rule: Rule, fields: Fields) -> None:
        points = tuple(sorted(name for name, values in fields.items() if values.is_point()))
        values = tuple(fields[name].ranges()[0][0] for name in points)
        self.buckets[(frozenset(fields), points)][values].append((rule, fields))

    def first_cover(self, fields: Fields) -> Rule | None:
        found: Rule | None = None
        for (names, points), by_value in self.buckets.items():
            values = self.point_values(fields, points) if names <= fields.keys() else None
            for rule, earlier in by_value.get(values, ()) if values is not None else ():
                if covers(earlier, fields) and (found is None or rule.index < found.index):
                    found = rule
                    break
        return found

    @staticmethod
    def point_values(fields: Fields, points: tuple) -> tuple | None:
        """The later rule's values in the earlier rules' single-value fields: a covered rule
        must hold exactly that value there."""
        if not all(fields[name].is_point() for name in points):
            return None
        return tuple(fields[name].ranges()[0][0] for name in points)


def shadow_warnings(ruleset: RuleSet, out: Collector) -> None:
    ifaces = interface_ids(ruleset.rules(), ())
    for chain in CHAINS:
        index = ShadowIndex()
        for rule in ruleset.chains[chain]:
            fields = rule_fields(rule, ifaces)
            earlier = index.first_cover(fields)
            if earlier is not None:
                out.warning(shadow_message(earlier, rule), rule.span)
            if rule.verdict is not None and rule.limit is None:  # a limit decides some only
                index.add(rule, fields)


def shadow_message(earlier: Rule, rule: Rule) -> str:
    where = f"line {earlier.span.line}" if earlier.span else f"rule {earlier.index + 1}"
    if earlier.span and rule.span and earlier.span.file != rule.span.file:
        where = f"{earlier.span.file}:{earlier.span.line}"
    return f"rule can never match: the rule at {where} ('{earlier.text}') matches all its packets"
