"""A chain compiled into a classifier whose cost per packet does not grow with the rule count.

Every rule is one bit. For each packet field that some rule tests, the field's value range is cut
at every rule's interval edges; each piece holds the bitmap of the rules that accept values in it
(rules that do not test the field accept all). A packet costs one bisect per tested field and an
AND of Python ints: the lowest set bit among rules with a verdict is the first match, as in the
bit-vector classifiers of the literature (Lakshman & Stiliadis) and nftables' set lookups.

Field values are encoded as fw/core/fields.py says (one integer per field, -1 for a value the
packet lacks), the same encoding the shadow check and the analysis use.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from fw.core.fields import MISSING, accepted_values
from fw.core.ranges import IntervalSet
from fw.model import Rule


@dataclass(frozen=True, slots=True)
class FieldTable:
    """One field's cut points and, for each piece, the bitmap of rules accepting it."""

    name: str
    starts: tuple[int, ...]
    masks: tuple[int, ...]

    def lookup(self, value: int) -> int:
        return self.masks[bisect_right(self.starts, value) - 1]


def build_field_table(name: str, sets: dict[int, IntervalSet], everyone: int) -> FieldTable:
    """Sweep the rules' intervals in order of their edges, keeping the set of rules inside."""
    untested = everyone
    for bit in sets:
        untested &= ~(1 << bit)
    events: dict[int, int] = {}
    for bit, values in sets.items():
        for lo, hi in values.ranges():
            events[lo] = events.get(lo, 0) ^ (1 << bit)
            events[hi + 1] = events.get(hi + 1, 0) ^ (1 << bit)
    starts, masks, inside = [MISSING - 1], [untested], 0
    for edge in sorted(events):
        inside ^= events[edge]
        starts.append(edge)
        masks.append(untested | inside)
    return FieldTable(name, tuple(starts), tuple(masks))


@dataclass(frozen=True, slots=True)
class CompiledChain:
    """A chain ready for packets: field tables, which rules decide, the policy."""

    rules: tuple[Rule, ...]
    fields: tuple[FieldTable, ...]
    verdict_mask: int
    everyone: int

    def matching(self, values: dict[str, int]) -> int:
        """Bitmap of every rule whose matches all hold for these field values."""
        mask = self.everyone
        for table in self.fields:
            mask &= table.lookup(values.get(table.name, MISSING))
            if not mask:
                break
        return mask

    def first_decider(self, mask: int) -> Rule | None:
        deciding = mask & self.verdict_mask
        if not deciding:
            return None
        return self.rules[(deciding & -deciding).bit_length() - 1]

    def statement_rules(self, mask: int, before: Rule | None) -> list[Rule]:
        """Rules without a verdict that matched before the deciding rule (counter, log)."""
        limit = (1 << before.index) - 1 if before is not None else self.everyone
        pending, out = mask & ~self.verdict_mask & limit, []
        while pending:
            low = pending & -pending
            out.append(self.rules[low.bit_length() - 1])
            pending ^= low
        return out


def has_verdict(rule: Rule) -> bool:
    return rule.verdict is not None


def compile_chain(
    rules: Sequence, ifaces: dict[str, int], decides: Callable[[object], bool] = has_verdict
) -> CompiledChain:
    """Compile filter rules (or NAT rules, with `decides` saying every one of them decides)."""
    per_field: dict[str, dict[int, IntervalSet]] = {}
    for bit, rule in enumerate(rules):
        for match in rule.matches:
            field, values = accepted_values(match, ifaces)
            previous = per_field.setdefault(field, {}).get(bit)
            per_field[field][bit] = values if previous is None else previous & values
    everyone = (1 << len(rules)) - 1
    tables = tuple(build_field_table(f, sets, everyone) for f, sets in per_field.items())
    verdicts = sum(1 << i for i, rule in enumerate(rules) if decides(rule))
    return CompiledChain(tuple(rules), tables, verdicts, everyone)
