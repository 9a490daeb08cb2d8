"""nft rules (JSON) as fwlab rules: matches translated, jumps and gotos inlined.

An nft rule is matches, then statements, then a verdict, like a fwlab rule. A `jump` to a
regular chain becomes that chain's rules, each with the jumping rule's matches in front; a
`goto` the same, then the base chain's policy for what falls through. A loop of jumps is
refused. What cannot be said exactly raises Unsupported; with `skip` the rule becomes a comment.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from fw.core.fields import rule_families
from fw.core.icmp_types import ICMP_CODES, ICMPV6_CODES
from fw.dsl.contradictions import never_matches
from fw.dsl.format import match_text
from fw.errors import FwlabError
from fw.export.nft_expr import Unsupported, translate_match
from fw.export.nft_match import implies_proto
from fw.model import LOG_LEVELS, UNIT_SECONDS, AddrMatch, Limit, Match

MAX_DEPTH = 16
ENDINGS = frozenset({"accept", "drop", "reject", "jump", "goto", "return", "continue", "dnat",
                     "snat", "masquerade", "notrack"})
TCP_RESET = {"type": "tcp reset"}
PORT_UNREACHABLE = tuple({"type": t, "expr": "port-unreachable"}
                         for t in ("icmpx", "icmp", "icmpv6"))


@dataclass
class NftRule:
    expr: list
    comment: str | None
    where: str  # where it stands, for messages: file:line or file: JSON path
    json: bool = False  # `where` is a JSON path: an expression's index can be added

    def at(self, exc: Unsupported) -> str:
        index = getattr(exc, "index", None)
        return f"{self.where}.expr[{index}]" if self.json and index is not None else self.where


@dataclass
class NftChain:
    family: str
    table: str
    name: str
    hook: str | None = None
    type: str | None = None
    prio: int = 0
    policy: str = "accept"
    rules: list[NftRule] = field(default_factory=list)

    @property
    def title(self) -> str:
        return f"table {self.family} {self.table}, chain {self.name}"


@dataclass
class FwRule:
    """A rule as fwlab text, or (`skipped` set) a comment standing where a rule was left out."""

    matches: list[Match] = field(default_factory=list)
    statements: list[str] = field(default_factory=list)
    verdict: str | None = None
    comment: str | None = None
    skipped: str | None = None
    where: str = ""

    def text(self) -> str:
        if self.skipped is not None:
            return f"# skipped: {self.skipped}"
        words = [fw_match(m) for m in self.matches] + self.statements
        words += [self.verdict] if self.verdict else []
        words += [f"comment {fw_string(self.comment)}"] if self.comment else []
        return " ".join(words)


def fw_match(match: Match) -> str:
    """The match in the rules language, host addresses without their /32 or /128."""
    if isinstance(match, AddrMatch):
        hosts = [str(p.network_address) if p.prefixlen == p.max_prefixlen else str(p)
                 for p in match.prefixes]
        shown = hosts[0] if len(hosts) == 1 else "{ " + ", ".join(hosts) + " }"
        family = "ip" if match.family == 4 else "ip6"
        return f"{family} {match.kind} {'!= ' if match.negate else ''}{shown}"
    return match_text(match)


def fw_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class Parsed:
    """One nft rule split: its matches, statements, and what ends it."""

    matches: list[Match]
    statements: list[str]
    ending: dict | None  # {"accept": None}, {"jump": {...}}, {"dnat": {...}}, ...


def parse_rule(rule: NftRule, family: str, *, nat: bool = False) -> Parsed:
    matches: list[Match] = []
    statements: list[str] = []
    ending = None
    for index, expr in enumerate(rule.expr):
        try:
            ending = take(expr, matches, statements, ending, family, nat)
        except Unsupported as exc:
            exc.index = index
            raise
    return Parsed(matches, statements, ending)


def take(expr: dict, matches: list[Match], statements: list[str], ending: dict | None,
         family: str, nat: bool) -> dict | None:
    """One expression of a rule into its place; returns the rule's ending so far."""
    kind, body = next(iter(expr.items()))
    if ending is not None:
        raise Unsupported(f"'{kind}' after the verdict")
    if kind == "match":
        if statements:
            raise Unsupported("a match after a statement (counter, log)")
        matches.extend(translate_match(body, family))
    elif kind == "counter" and (body is None or "name" not in body):
        statements.append("counter")
    elif kind == "log":
        if nat:
            raise Unsupported("log in a nat rule (fwlab's nat rules take no statements)")
        statements.append(log_text(body))
    elif kind == "limit" and not nat:
        if statements:
            raise Unsupported("a limit after a statement (counter, log)")
        matches.append(limit_of(body))
    elif kind in ENDINGS:
        return expr
    else:
        raise Unsupported(f"the statement '{kind}'")
    return None


def log_text(body: dict | None) -> str:
    body = body or {}
    words = ["log"]
    if body.get("prefix"):
        words.append(f"prefix {fw_string(body['prefix'])}")
    if body.get("level") and body["level"] != "warn":
        if body["level"] not in LOG_LEVELS:
            raise Unsupported(f"log level {body['level']!r}")
        words.append(f"level {body['level']}")
    return " ".join(words)


def limit_of(body: dict) -> Limit:
    """`limit rate [over] N/unit [burst M packets]`; byte rates have no fwlab equivalent."""
    if body.get("rate_unit", "packets") != "packets" or body.get("per") not in UNIT_SECONDS:
        raise Unsupported(f"the limit {body!r}")
    return Limit(rate=body["rate"], unit=body["per"], burst=body.get("burst") or 5,
                 over=bool(body.get("inv")))


def reject_with_text(matches: list[Match], body: dict | None) -> str | None:
    """`reject with icmp(v6) type CODE` where the rule is of that family only (as fwlab asks)."""
    if not body or body.get("type") not in ("icmp", "icmpv6"):
        return None
    family = 4 if body["type"] == "icmp" else 6
    table = ICMP_CODES if family == 4 else ICMPV6_CODES
    if body.get("expr") not in table or rule_families(matches) != {family}:
        return None
    return f"reject with {body['type']} type {body['expr']}"


class Inliner:
    """Translates a base chain's rules, inlining the regular chains they jump to."""

    def __init__(self, chains: dict[tuple[str, str, str], NftChain], skip: bool) -> None:
        self.chains = chains
        self.skip = skip

    def base(self, chain: NftChain, prefix: list[Match] | None = None) -> list[FwRule]:
        return self.walk(chain, list(prefix or []), [chain.name], chain.policy)

    def walk(self, chain: NftChain, prefix: list[Match], stack: list[str],
             policy: str) -> list[FwRule]:
        out: list[FwRule] = []
        for rule in chain.rules:
            try:
                made, stop = self.rule(chain, rule, prefix, stack, policy)
            except Unsupported as exc:
                if not self.skip:
                    raise FwlabError(f"{rule.at(exc)}: error: {exc.message}") from None
                made, stop = [FwRule(skipped=f"{rule.at(exc)}: {exc.what}")], False
            out.extend(map(alive, made))
            if stop:
                break
        return out

    def rule(self, chain: NftChain, rule: NftRule, prefix: list[Match], stack: list[str],
             policy: str) -> tuple[list[FwRule], bool]:
        """The fwlab rules for one nft rule, and whether the chain ends there (`return`)."""
        made, stop = self.translate(chain, rule, prefix, stack, policy)
        for fw_rule in made:
            fw_rule.where = fw_rule.where or rule.where
        return made, stop

    def translate(self, chain: NftChain, rule: NftRule, prefix: list[Match], stack: list[str],
                  policy: str) -> tuple[list[FwRule], bool]:
        parsed = parse_rule(rule, chain.family)
        matches = [*prefix, *parsed.matches]
        ending = parsed.ending
        kind = next(iter(ending)) if ending else None
        if kind in (None, "continue"):
            return [FwRule(matches, parsed.statements or ["counter"], None, rule.comment)], False
        if kind in ("accept", "drop"):
            return [FwRule(matches, counted(parsed), kind, rule.comment)], False
        if kind == "reject":
            return [self.reject(matches, parsed, ending["reject"], rule.comment)], False
        if kind in ("jump", "goto"):
            return self.jump(chain, rule, parsed, matches, stack, policy), False
        if kind == "return":
            if parsed.matches:
                raise Unsupported("a conditional return")
            return ([FwRule(prefix, [], policy)] if len(stack) == 1 else []), True
        raise Unsupported(f"the statement '{kind}'")

    @staticmethod
    def reject(matches: list[Match], parsed: Parsed, body: dict | None,
               comment: str | None) -> FwRule:
        """fwlab's reject answers TCP with a RST and the rest with a port unreachable; where
        nft answers otherwise the verdict is the same (refused) and a comment says so."""
        chosen = reject_with_text(matches, body)
        if chosen is not None:
            return FwRule(matches, counted(parsed), chosen, comment)
        protos = implies_proto(matches)
        tcp_only, no_tcp = protos == {6}, protos is not None and 6 not in protos
        fits = (body == TCP_RESET and tcp_only) or (body in (None, *PORT_UNREACHABLE) and no_tcp)
        if not fits:
            shown = "reject" + (f" with {' '.join(map(str, body.values()))}" if body else "")
            note = f"nft: {shown}; fwlab answers TCP with a RST, the rest port unreachable"
            comment = f"{comment} ({note})" if comment else note
        return FwRule(matches, counted(parsed), "reject", comment)

    def jump(self, chain: NftChain, rule: NftRule, parsed: Parsed, matches: list[Match],
             stack: list[str], policy: str) -> list[FwRule]:
        kind, body = next(iter(parsed.ending.items()))
        target = self.chains.get((chain.family, chain.table, body["target"]))
        if target is None or target.hook is not None:
            raise Unsupported(f"{kind} to {body['target']!r}, not a regular chain of the table")
        if engine_reject(target):
            return [FwRule(matches, counted(parsed), "reject", rule.comment)]
        if target.name in stack:
            raise Unsupported(f"a loop of jumps: {' -> '.join([*stack, target.name])}")
        if len(stack) >= MAX_DEPTH:
            raise Unsupported(f"jumps nested deeper than {MAX_DEPTH}")
        if kind == "goto" and len(stack) > 1:
            raise Unsupported("a goto inside a chain reached by jump")
        out = [FwRule(matches, parsed.statements, None, rule.comment)] if parsed.statements else []
        out += self.walk(target, matches, [*stack, target.name], policy)
        if kind == "goto":
            out.append(FwRule(matches, [], policy, f"end of goto {target.name}"))
        return out


def alive(rule: FwRule) -> FwRule:
    """The rule, or a comment where inlining a jump made it one no packet can match (the
    jump's matches exclude the target rule's: it is dead in nft too)."""
    if rule.skipped is not None:
        return rule
    never = never_matches([m for m in rule.matches if not isinstance(m, Limit)])
    return rule if never is None else FwRule(skipped=f"never matches: {never.message}")


def counted(parsed: Parsed) -> list[str]:
    """`counter` says something in fwlab only on a rule without a verdict (all rules count)."""
    return [s for s in parsed.statements if s != "counter"]


def engine_reject(chain: NftChain) -> bool:
    """The exporter's helper: RST for TCP, port unreachable for the rest, i.e. fwlab's reject."""
    exprs = [r.expr for r in chain.rules]
    return exprs == [
        [{"match": {"op": "==", "left": {"meta": {"key": "l4proto"}}, "right": "tcp"}},
         {"reject": {"type": "tcp reset"}}],
        [{"reject": {"type": "icmpx", "expr": "port-unreachable"}}],
    ]
