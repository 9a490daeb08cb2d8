"""An nftables rule set as a fwlab rule file: `fwlab import`.

Input is nft text (loaded by nft itself in a throwaway namespace, fw/export/nft_text.py) or the
JSON of `nft -j list ruleset`. Base chains at input/forward/output become fwlab's chains with
their policies (rules: fw/export/nft_rules.py), an unconditional `notrack` at prerouting makes
the file stateless, table ip nat chains become the `nat` block (fw/export/nft_import_nat.py).
Chains of family ip or ip6 only see their family; the fwlab chain says so with `ip saddr
0.0.0.0/0` / `ip6 saddr ::/0` (any IPv4 / IPv6 packet). What the exporter adds for the kernel
(the neighbour-discovery rule, hairpinning, port-class pieces, the reject helper) comes back as
the rule it was made from, so import(export(F)) is F's meaning.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field

from fw.errors import FwlabError
from fw.export.nft import LINK_CONTROL_NOTE
from fw.export.nft_expr import Unsupported, family_match
from fw.export.nft_import_nat import NatImport
from fw.export.nft_rules import FwRule, Inliner, NftChain, NftRule
from fw.export.nft_text import rule_lines, ruleset_json
from fw.model import CHAINS, CtStateMatch

ChainKey = tuple[str, str, str]
IP_FAMILIES = ("inet", "ip", "ip6")


@dataclass(frozen=True)
class ImportResult:
    text: str
    skipped: list[str] = field(default_factory=list)  # what was left out, where


def import_nft(text: str, origin: str, *, skip_unsupported: bool = False) -> ImportResult:
    """The fwlab rule file meaning what `text` (nft text or JSON) means."""
    if text.lstrip().startswith("{"):
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            raise FwlabError(f"{origin}:{exc.lineno}:{exc.colno}: error: not JSON: {exc.msg}"
                             ) from None
        return from_json(doc, origin, None, skip_unsupported)
    return from_json(ruleset_json(text, origin), origin, rule_lines(text), skip_unsupported)


def from_json(doc: object, origin: str, lines: dict | None, skip: bool) -> ImportResult:
    chains = collect(doc, origin, lines)
    builder = Builder(chains, origin, skip)
    return ImportResult(builder.text(), builder.skipped)


def collect(doc: object, origin: str, lines: dict | None) -> dict[ChainKey, NftChain]:
    items = doc.get("nftables") if isinstance(doc, dict) else None
    if not isinstance(items, list):
        raise FwlabError(f"{origin}: error: not the JSON of `nft -j list ruleset` "
                         "(no 'nftables' list)")
    chains: dict[ChainKey, NftChain] = {}
    sets: dict[ChainKey, list] = {}
    for index, item in enumerate(items):
        kind, body = next(iter(item.items())) if isinstance(item, dict) and item else ("", None)
        if kind == "chain":
            chains[key(body)] = new_chain(body)
        elif kind == "set":
            sets[(body["family"], body["table"], body["name"])] = set_elements(body)
        elif kind == "rule":
            chain = chains.get((body["family"], body["table"], body["chain"]))
            if chain is not None:
                expr = with_sets(body.get("expr", []), body, sets)
                where = f"{origin}: nftables[{index}].rule"
                chain.rules.append(NftRule(expr, body.get("comment"), where, json=True))
    if lines is not None:
        locate(chains, origin, lines)
    return chains


def key(body: dict) -> ChainKey:
    return (body["family"], body["table"], body["name"])


def new_chain(body: dict) -> NftChain:
    return NftChain(body["family"], body["table"], body["name"], body.get("hook"),
                    body.get("type"), body.get("prio", 0), body.get("policy", "accept"))


def set_elements(body: dict) -> list:
    """A named set's elements ({"elem": {"val": v, ...}} unwrapped); a map is not a set."""
    if "map" in body:
        return [{"map": body["name"]}]
    return [e["elem"]["val"] if isinstance(e, dict) and "elem" in e else e
            for e in body.get("elem", [])]


def with_sets(expr: list, rule: dict, sets: dict) -> list:
    """`@name` on a match's right side replaced by the named set's elements."""
    out = []
    for item in expr:
        match = item.get("match") if isinstance(item, dict) else None
        right = match.get("right") if match else None
        if isinstance(right, str) and right.startswith("@"):
            found = sets.get((rule["family"], rule["table"], right[1:]))
            if found is not None:
                item = {"match": {**match, "right": {"set": found}}}
        out.append(item)
    return out


def locate(chains: dict[ChainKey, NftChain], origin: str, lines: dict) -> None:
    """Text input: each rule at its line, when the scan found as many rules as nft did."""
    for chain_key, chain in chains.items():
        found = lines.get(chain_key, [])
        for number, rule in enumerate(chain.rules, 1):
            rule.json = False
            rule.where = (f"{origin}:{found[number - 1]}" if len(found) == len(chain.rules)
                          else f"{origin}: {chain.title}, rule {number}")


def notrack(chain: NftChain) -> bool:
    """Every rule an unconditional `notrack` (counters aside): nothing is tracked."""
    return bool(chain.rules) and all(
        [e for e in r.expr if "counter" not in e] == [{"notrack": None}] for r in chain.rules)


class Builder:
    """Sorts the base chains by role and writes the rule file."""

    def __init__(self, chains: dict[ChainKey, NftChain], origin: str, skip: bool) -> None:
        self.chains, self.origin, self.skip = chains, origin, skip
        self.skipped: list[str] = []
        self.notes: list[str] = []
        self.filters: dict[str, list[NftChain]] = {c: [] for c in CHAINS}
        self.nat: dict[str, list[NftChain]] = {"dnat": [], "snat": [], "local": []}
        self.stateless = False
        for chain in sorted(chains.values(), key=lambda c: c.prio):
            if chain.hook is not None:
                self.guard(chain.title, lambda c=chain: self.place(c))

    def guard(self, where: str, work) -> None:
        try:
            work()
        except Unsupported as exc:
            if not self.skip:
                raise FwlabError(f"{self.origin}: {where}: error: {exc.message}") from None
            self.note(f"{where}: {exc.what}")

    def note(self, text: str) -> None:
        self.skipped.append(text)
        self.notes.append(f"# skipped: {text}")

    def place(self, chain: NftChain) -> None:
        chain.rules = [r for r in chain.rules if r.comment != LINK_CONTROL_NOTE]
        idle = not chain.rules and chain.policy == "accept"
        if chain.family not in IP_FAMILIES:
            if not idle:
                raise Unsupported(f"a base chain of family {chain.family}")
        elif chain.type == "filter" and chain.hook in ("prerouting", "output") and notrack(chain):
            self.stateless = True
        elif chain.type == "filter" and chain.hook in CHAINS:
            self.filters[chain.hook].append(chain)
        elif chain.type == "nat" and chain.hook in ("prerouting", "postrouting", "output"):
            role = {"prerouting": "dnat", "postrouting": "snat", "output": "local"}[chain.hook]
            self.nat[role].append(chain)
        elif not idle:
            raise Unsupported(f"a {chain.type} chain at the {chain.hook} hook")

    def chain_rules(self, hook: str) -> tuple[str, list[FwRule]]:
        """The fwlab chain for one hook: one inet chain, or ip and ip6 chains one after the
        other, each rule kept to its family; no chain: everything passes."""
        found = self.filters[hook]
        inliner = Inliner(self.chains, self.skip)
        families = sorted(c.family for c in found)
        if not found:
            return "accept", []
        if families == ["inet"]:
            return found[0].policy, inliner.base(found[0])
        if families not in (["ip"], ["ip6"], ["ip", "ip6"]):
            names = ", ".join(c.title for c in found)
            raise Unsupported(f"several base chains at the {hook} hook ({names})")
        return self.by_family(found, inliner)

    @staticmethod
    def by_family(found: list[NftChain], inliner: Inliner) -> tuple[str, list[FwRule]]:
        v4 = next((c for c in found if c.family == "ip"), None)
        v6 = next((c for c in found if c.family == "ip6"), None)
        rules: list[FwRule] = []
        if v4 is not None:
            rules += inliner.base(v4, [family_match(4)])
            if v6 is None:
                return v4.policy, [FwRule([family_match(6)], [], "accept",
                                          "no IPv6 chain in the nft rule set"), *rules]
            rules.append(FwRule([family_match(4)], [], v4.policy, "IPv4's policy"))
        rules += inliner.base(v6, [family_match(6)])
        if v4 is None:
            rules.insert(0, FwRule([family_match(4)], [], "accept",
                                   "no IPv4 chain in the nft rule set"))
        return v6.policy, rules

    def text(self) -> str:
        policies, bodies = {}, {}
        for hook in CHAINS:
            policies[hook], bodies[hook] = "accept", []
            self.guard(f"the {hook} hook", lambda h=hook: self.fill(h, policies, bodies))
        nat = NatImport(self.skip).block(**self.nat) if any(self.nat.values()) else []
        return self.render(policies, bodies, self.checked(nat))

    def fill(self, hook: str, policies: dict, bodies: dict) -> None:
        policies[hook], rules = self.chain_rules(hook)
        bodies[hook] = self.checked(rules)

    def checked(self, rules: list[FwRule]) -> list[FwRule]:
        """Skipped rules are listed; a stateless file cannot test connection states."""
        out = []
        for rule in rules:
            if self.stateless and any(isinstance(m, CtStateMatch) for m in rule.matches):
                if not self.skip:
                    raise FwlabError(f"{rule.where}: error: unsupported: ct state in a rule set "
                                     "that tracks nothing (notrack)")
                rule = FwRule(skipped=f"{rule.where}: ct state with notrack")
            if rule.skipped is not None:
                self.skipped.append(rule.skipped)
            out.append(rule)
        return out

    def render(self, policies: dict, bodies: dict, nat: list[FwRule]) -> str:
        mode = "stateless" if self.stateless else "stateful"
        if self.stateless and any(r.skipped is None for r in nat):
            raise FwlabError(f"{self.origin}: error: unsupported: NAT with notrack "
                             "(nothing tracked, nothing to translate)")
        lines = [f"# imported by fwlab from {self.origin} (nftables)", f"mode {mode}", "",
                 *self.notes, *(f"policy {h} {policies[h]}" for h in CHAINS)]
        for name, rules in [*bodies.items(), ("nat", nat)]:
            if rules:
                lines += ["", f"{name} {{", *(f"    {r.text()}" for r in rules), "}"]
        return "\n".join(lines) + "\n"
