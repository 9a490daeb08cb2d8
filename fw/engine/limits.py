"""`limit rate` as nft's nft_limit does it: one token bucket per rule, refilled from `now`.

The engine is given the time with every packet, so the buckets read no clock and a replay
gives the same verdicts every time. Like the kernel, the bucket counts in nanoseconds: a packet
costs `unit / rate`, the bucket holds `burst` packets' worth and starts full; a rule matches
when a token is there (and takes it), or with `over` when none is.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fw.model import UNIT_SECONDS, Limit, Rule

NS = 1_000_000_000


@dataclass(slots=True)
class TokenBucket:
    cost: int  # ns of refill one packet takes
    capacity: int  # ns: burst packets' worth
    over: bool
    tokens: int = 0
    last: int | None = None

    @classmethod
    def of(cls, limit: Limit) -> TokenBucket:
        cost = UNIT_SECONDS[limit.unit] * NS // limit.rate
        return cls(cost, cost * limit.burst, limit.over, cost * limit.burst)

    def matches(self, now: float) -> bool:
        """Whether the rule's limit holds for a packet at `now` (spending a token if so)."""
        at = round(now * NS)
        tokens = self.tokens if self.last is None else self.tokens + max(at - self.last, 0)
        self.tokens = min(tokens, self.capacity)
        self.last = at if self.last is None else max(at, self.last)
        if self.tokens >= self.cost:
            self.tokens -= self.cost
            return not self.over
        return self.over


class ChainLimits:
    """The buckets of one chain's limited rules, by rule bit."""

    def __init__(self, rules: Sequence[Rule]) -> None:
        self.buckets = {r.index: TokenBucket.of(r.limit) for r in rules if r.limit is not None}
        self.mask = sum(1 << i for i in self.buckets)

    def apply(self, mask: int, deciders: int, now: float) -> int:
        """`mask` (rules whose matches hold) less the limited rules whose limit refuses the
        packet. Rules are asked in order and only up to the first rule that decides, as nft
        evaluates them: a later rule's bucket is not spent on a packet it never sees."""
        pending = mask & self.mask
        while pending:
            low = pending & -pending
            deciding = mask & deciders
            if deciding and (deciding & -deciding) < low:
                break
            if not self.buckets[low.bit_length() - 1].matches(now):
                mask &= ~low
            pending ^= low
        return mask
