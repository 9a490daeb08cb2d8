"""The semantic pass: lark trees of a file and its includes -> a checked RuleSet.

It walks statements in file order (includes inline), so "defined before use" is simply the state
of the table at that point. Problems are collected, not raised, so `check` reports all of them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from lark import Token, Tree

from fw.core.fields import rule_protocols
from fw.core.icmp_types import ICMP_CODES, ICMPV6_CODES
from fw.core.protocols import TCP
from fw.core.vocab import NatBehaviour
from fw.dsl.contradictions import never_matches
from fw.dsl.diagnostics import Collector
from fw.dsl.includes import MAX_DEPTH, MAX_LINES, IncludeTooDeep, SourceFiles, resolved
from fw.dsl.matches import MatchBuilder, mentions_ip6, rule_family
from fw.dsl.pools import PoolBuilder, pool_port_given
from fw.dsl.spans import span_of, token_span, unquote
from fw.dsl.values import (
    KIND_BY_TOKEN,
    Atom,
    Value,
    ValueError_,
    check_one_kind,
    exact_prefix,
    network_or_none,
    suggest,
    to_port_range,
)
from fw.errors import FwlabError, Span
from fw.model import (
    CHAINS,
    LOG_LEVELS,
    ChainName,
    CtStateMatch,
    CtStatusMatch,
    Limit,
    NatRule,
    Policy,
    PortMatch,
    PortRange,
    RejectWith,
    Rule,
    RuleSet,
    Statement,
)

NAT_BEHAVIOURS = tuple(NatBehaviour)
RULE_PART_ORDER = {"match": 0, "statement": 1, "verdict": 2, "reject_with": 2, "comment": 3}


@dataclass
class Define:
    value: Value
    span: Span
    used: bool = False


@dataclass
class Builder:
    out: Collector
    defines: dict[str, Define] = field(default_factory=dict)
    mode: str | None = None
    mode_span: Span | None = None  # the main file's `mode` line: file-wide warnings point there
    policies: dict[str, Policy] = field(default_factory=dict)
    chains: dict[str, list[Rule]] = field(default_factory=lambda: {c: [] for c in CHAINS})
    nat: list[NatRule] = field(default_factory=list)
    stack: list[str] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    sources: SourceFiles = field(default_factory=SourceFiles)
    lines: int = 0  # of every file loaded so far, each inclusion counted

    # -- files -------------------------------------------------------------------------------

    def load(self, path: str, include_span: Span | None = None) -> None:
        source = self.sources.get(path)
        if source.problem is not None:
            self.unreadable(path, source.problem, include_span)
            return
        self.stack.append(resolved(path))
        self.lines += source.lines
        path = source_name(path)
        self.out.sources.texts[path] = source.text
        self.files.append(path)
        try:
            if source.syntax is not None:
                self.out.error(source.syntax.message, source.syntax.span)
            else:
                self.walk(source.tree, path, top=include_span is None)
        finally:
            self.stack.pop()

    def unreadable(self, path: str, why: str, include_span: Span | None) -> None:
        if include_span:
            self.out.error(f"cannot include '{path}': {why}", include_span)
        else:
            self.out.error(f"cannot read the file: {why}", Span(path, 0, 0))

    def within_limits(self, target: str, span: Span) -> bool:
        """Whether including `target` here stays within MAX_DEPTH and MAX_LINES; says why not."""
        try:
            lines = self.sources.cost(target, self.stack)
        except IncludeTooDeep as exc:
            self.out.error(f"includes nest more than {MAX_DEPTH} files deep "
                           f"(at '{exc.path}')", span)
            return False
        if self.lines + lines > MAX_LINES:
            self.out.error(f"including '{target}' takes the rule set past the limit of "
                           f"{MAX_LINES:,} lines (each inclusion of a file counts)", span)
            return False
        return True

    def walk(self, tree: Tree, path: str, top: bool) -> None:
        items = [c for c in tree.children if isinstance(c, Tree)]
        self.check_mode_first(items, path, top)
        for item in items:
            getattr(self, f"item_{item.data}")(item, path)

    # -- top-level statements ---------------------------------------------------------------

    def check_mode_first(self, items: list[Tree], path: str, top: bool) -> None:
        modes = [i for i in items if i.data == "mode"]
        if top and not modes:
            self.out.error(
                "missing 'mode stateful' or 'mode stateless' (it must be the first statement)",
                Span(path, 1, 1, 1, 2),
            )
        for item in modes:
            if item is not items[0]:
                self.out.error("'mode' must be the first statement", span_of(item, path))

    def item_mode(self, item: Tree, path: str) -> None:
        name: Token = item.children[0]
        span = token_span(name, path)
        if name not in ("stateful", "stateless"):
            self.out.error(f"unknown mode '{name}'; use 'stateful' or 'stateless'", span)
        elif self.mode is None:
            self.mode = str(name)
            self.mode_span = span_of(item, path)
        elif self.mode != name:
            message = f"included file says 'mode {name}' but the rule set is {self.mode}"
            self.out.error(message, span)

    def item_define(self, item: Tree, path: str) -> None:
        name_token, value_tree = item.children
        name, span = str(name_token), token_span(name_token, path)
        value = self.value(value_tree, path)
        if name in self.defines:
            first = self.defines[name].span
            self.out.error(f"'${name}' is already defined at {first}", span)
        elif value is not None:
            self.defines[name] = Define(Value(value.atoms, value.span, name), span)
            self.host_bits(value)

    def host_bits(self, value: Value) -> None:
        """`192.0.2.1/24` means 192.0.2.0/24: say so, it is often a host meant as a host."""
        for atom in value.atoms:
            if atom.kind == "address" and "/" in atom.text and "-" not in atom.text:
                net = network_or_none(atom.text)
                if net is not None and not exact_prefix(atom.text):
                    self.out.warning(f"'{atom.text}' has host bits set: it means {net}",
                                     atom.span)

    def item_include(self, item: Tree, path: str) -> None:
        token: Token = item.children[0]
        span = token_span(token, path)
        target = str(Path(path).parent / unquote(token))
        key = resolved(target)
        if key in self.stack:
            chain = [*self.stack[self.stack.index(key) :], key]
            names = " -> ".join(Path(p).name for p in chain)
            self.out.error(f"include cycle: {names}", span)
            return
        if self.within_limits(target, span):
            self.load(target, span)

    def item_policy(self, item: Tree, path: str) -> None:
        chain, verdict = item.children
        span = span_of(item, path)
        if chain not in CHAINS:
            hint = suggest(str(chain), dict.fromkeys(CHAINS))
            self.out.error(f"unknown chain '{chain}'{hint}", token_span(chain, path))
        elif verdict not in ("accept", "drop"):
            self.out.error(
                f"a policy is 'accept' or 'drop', not '{verdict}'", token_span(verdict, path)
            )
        elif chain in self.policies:
            first = self.policies[chain].span
            self.out.error(f"policy {chain} is set twice (first at {first})", span)
        else:
            self.policies[str(chain)] = Policy(verdict=str(verdict), span=span)

    def item_chain(self, item: Tree, path: str) -> None:
        chain = str(item.children[0])
        for rule_tree in item.children[1:]:
            rule = self.rule(rule_tree, chain, path)
            if rule is not None:
                self.chains[chain].append(rule)

    def item_nat(self, item: Tree, path: str) -> None:
        if self.mode == "stateless":
            self.out.error("a 'nat' block needs 'mode stateful'", span_of(item, path, width=3))
        for rule_tree in item.children:
            rule = self.nat_rule(rule_tree, path)
            if rule is not None:
                self.nat.append(rule)

    # -- values ------------------------------------------------------------------------------

    def value(self, tree: Tree | Token, path: str) -> Value | None:
        """Resolve a value (atom, set or $name); None after reporting a problem."""
        try:
            return self.resolve(tree, path)
        except ValueError_ as exc:
            self.out.error(exc.message, exc.span)
            return None

    def resolve(self, tree: Tree | Token, path: str) -> Value:
        if isinstance(tree, Token) and tree.type == "VAR":
            return self.lookup(tree, path)
        if isinstance(tree, Token):
            atom = self.atom(tree, path)
            return Value((atom,), atom.span)
        atoms = tuple(self.atom(a, path) for a in tree.children)
        span = span_of(tree, path)
        check_one_kind(atoms, span)
        return Value(atoms, span)

    def lookup(self, token: Token, path: str) -> Value:
        name, span = token[1:], token_span(token, path)
        define = self.defines.get(name)
        if define is None:
            hint = suggest(name, self.defines)
            hint = hint.replace("'", "'$", 1) if hint else ""
            raise ValueError_(f"undefined name '${name}'{hint}", span)
        define.used = True
        return Value(define.value.atoms, span, name)

    def atom(self, token: Token, path: str) -> Atom:
        return Atom(str(token), KIND_BY_TOKEN[token.type], token_span(token, path))

    # -- rules -------------------------------------------------------------------------------

    def rule(self, tree: Tree, chain: str, path: str) -> Rule | None:
        parts = self.ordered_parts(tree.children, path, nat=False)
        built = self.matches(parts["match"], path, nat=False)
        statements = tuple(self.statement(p, path) for p in parts["statement"])
        if built is None or None in statements:
            return None
        matches, limit = built
        if not self.can_match(matches, span_of(tree, path)):
            return None
        verdict = str(parts["verdict"][0]) if parts["verdict"] else None
        if verdict is None and not statements:
            self.out.warning("rule has no verdict and no statement: it does nothing",
                             span_of(tree, path))
        try:
            reject_with = self.reject_with(parts, matches, path)
        except ValueError_ as exc:
            self.out.error(exc.message, exc.span)
            return None
        return Rule(
            chain=chain, index=len(self.chains[chain]), matches=matches, statements=statements,
            verdict=verdict, comment=self.comment(parts), reject_with=reject_with, limit=limit,
            text=self.text_of(tree, path), span=span_of(tree, path),
        )

    def reject_with(self, parts: dict[str, list[Tree]], matches: tuple,
                    path: str) -> RejectWith | None:
        if not parts["reject_with"]:
            return None
        tree = parts["reject_with"][0]
        span = span_of(tree, path)
        if [str(v) for v in parts["verdict"]] != ["reject"]:
            raise ValueError_("'with' follows 'reject' only", span)
        return reject_choice(tree, matches, span)

    def ordered_parts(self, children: list[Tree], path: str, nat: bool) -> dict[str, list[Tree]]:
        """Group a rule's parts, reporting any part out of the documented order."""
        parts: dict[str, list[Tree]] = {k: [] for k in (*RULE_PART_ORDER, "action", "option")}
        last = 0
        for part in children:
            kind = part_kind(part)
            order = RULE_PART_ORDER.get(kind, 1)
            if order < last:
                later = describe_order(last, nat)
                self.out.error(f"{describe(kind)} must come before {later}", node_span(part, path))
            last = max(last, order)
            parts[kind].append(part)
        self.check_counts(parts, path, nat)
        return parts

    def check_counts(self, parts: dict[str, list[Tree]], path: str, nat: bool) -> None:
        for kind, noun in (("verdict", "verdict"), ("comment", "comment"), ("action", "action")):
            for extra in parts[kind][1:]:
                self.out.error(f"a rule has at most one {noun}", node_span(extra, path))
        if nat:
            for kind in ("statement", "verdict", "reject_with"):
                for part in parts[kind]:
                    self.out.error(f"{describe(kind)} is not allowed in a nat rule",
                                   node_span(part, path))

    def matches(self, trees: list[Tree], path: str,
                nat: bool) -> tuple[tuple, Limit | None] | None:
        """The rule's matches, and its `limit` (not a field test: kept apart)."""
        builder = MatchBuilder(self, path)
        built = []
        for tree in trees:
            try:
                built.extend(builder.build(tree))
            except ValueError_ as exc:
                self.out.error(exc.message, exc.span)
                return None
        limits = [m for m in built if isinstance(m, Limit)]
        for extra in limits[1:]:
            self.out.error("a rule has at most one limit", extra.span)
        if limits and nat:
            self.out.error("'limit' is not allowed in a nat rule", limits[0].span)
        for match in built:
            self.check_match_mode(match, nat)
        matches = tuple(m for m in built if not isinstance(m, Limit))
        return matches, (limits[0] if limits else None)

    def can_match(self, matches: tuple, span: Span) -> bool:
        """False, after saying why, when two of the matches exclude each other."""
        never = never_matches(matches)
        if never is not None:
            self.out.error(f"this rule can never match: {never.message}",
                           never.match.span or span)
        return never is None

    def check_match_mode(self, match: object, nat: bool) -> None:
        if not isinstance(match, CtStateMatch | CtStatusMatch):
            return
        word = "ct state" if isinstance(match, CtStateMatch) else "ct status"
        if nat:
            self.out.error(f"'{word}' is not allowed in a nat rule", match.span)
        elif self.mode == "stateless":
            self.out.error(f"'{word}' needs 'mode stateful'", match.span)

    def statement(self, tree: Tree, path: str) -> Statement | None:
        """`counter`, or `log` with `prefix STRING` and `level LEVEL` in either order."""
        kind = str(tree.children[0])
        options: dict[str, str] = {}
        for option in tree.children[1:]:
            key, value = option.children
            problem = log_option_problem(str(key), value, options)
            if problem:
                self.out.error(problem, token_span(value, path))
                return None
            options[str(key)] = unquote(value) if key == "prefix" else str(value)
        return Statement(kind=kind, **options)

    def comment(self, parts: dict[str, list[Tree]]) -> str | None:
        return unquote(parts["comment"][0].children[0]) if parts["comment"] else None

    def text_of(self, tree: Tree, path: str) -> str:
        text = self.out.sources.texts.get(path, "")
        raw = text[tree.meta.start_pos : tree.meta.end_pos]
        return " ".join(raw.replace("\\\n", " ").split())

    # -- nat rules ---------------------------------------------------------------------------

    def nat_rule(self, tree: Tree, path: str) -> NatRule | None:
        parts = self.ordered_parts(tree.children, path, nat=True)
        built = self.matches(parts["match"], path, nat=True)
        if not parts["action"]:
            self.out.error("a nat rule needs masquerade, snat or dnat", span_of(tree, path))
            return None
        if built is None:
            return None
        matches = built[0]
        if not self.can_match(matches, span_of(tree, path)):
            return None
        try:
            return self.nat_rule_of(tree, parts, matches, path)
        except ValueError_ as exc:
            self.out.error(exc.message, exc.span)
            return None

    def nat_rule_of(self, tree: Tree, parts: dict, matches: tuple, path: str) -> NatRule:
        action_tree = parts["action"][0]
        action = str(action_tree.children[0])
        self.check_nat_matches(matches, span_of(tree, path))
        pool, addr, ports = self.nat_target(action_tree, path)
        if action == "dnat":
            given = ports if pool is None else pool_port_given(pool) or None
            self.check_dnat(matches, given, span_of(action_tree, path))
        options = self.nat_options(parts["option"], action, path)
        return NatRule(
            action=action, index=len(self.nat), matches=matches, to_addr=addr, to_ports=ports,
            pool=pool, comment=self.comment(parts), text=self.text_of(tree, path),
            span=span_of(tree, path), **options,
        )

    def nat_target(self, tree: Tree, path: str) -> tuple:
        """(pool, address, ports): a pool, or one address and maybe ports, or nothing."""
        if len(tree.children) < 2:
            return None, None, None
        if tree.children[1].data == "pool":
            pool, addr, port = PoolBuilder(self, path).target(tree.children[1])
            return pool, addr, PortRange(lo=port, hi=port) if port is not None else None
        return (None, *self.address_target(tree, path))

    def address_target(self, tree: Tree, path: str) -> tuple:
        target: Tree = tree.children[1]
        atoms = [self.single_atom(a, path) for a in target.children]
        address = atoms[0]
        if address.kind != "address" or "/" in address.text:
            raise ValueError_(f"'{address.text}' is not an address to translate to", address.span)
        from ipaddress import IPv4Address, ip_address

        try:
            addr = ip_address(address.text)
        except ValueError:
            raise ValueError_(f"'{address.text}' is not an IP address", address.span) from None
        if not isinstance(addr, IPv4Address):
            raise ValueError_("NAT is IPv4 only (NAT44): IPv6 passes untranslated", address.span)
        ports = to_port_range(atoms[1]) if len(atoms) > 1 else None
        return addr, ports

    def single_atom(self, token: Token, path: str) -> Atom:
        """A literal, or a `$name` defined as one literal (`dnat to $nas:$smb`)."""
        value = self.resolve(token, path)
        if len(value.atoms) != 1:
            raise ValueError_(f"'${value.define}' is a set; a nat target is one value",
                              value.span)
        atom = value.atoms[0]
        return Atom(atom.text, atom.kind, value.span) if value.define else atom

    def check_nat_matches(self, matches: tuple, span: Span) -> None:
        for match in matches:
            if mentions_ip6(match):
                raise ValueError_("NAT is IPv4 only (NAT44): no IPv6 matches in a nat rule",
                                  match.span or span)

    def check_dnat(self, matches: tuple, ports: object, span: Span) -> None:
        if ports is None:
            return
        if isinstance(ports, PortRange) and ports.lo != ports.hi:
            raise ValueError_("dnat translates to one port, not a range", span)
        if not any(isinstance(m, PortMatch) for m in matches):
            raise ValueError_("dnat to a port needs a 'tcp dport' or 'udp dport' match", span)

    def nat_options(self, trees: list[Tree], action: str, path: str) -> dict[str, str]:
        options: dict[str, str] = {}
        for tree in trees:
            key, value = (str(c) for c in tree.children)
            span = span_of(tree, path)
            if action == "dnat":
                raise ValueError_(f"'{key}' applies to snat and masquerade, not dnat", span)
            if value not in NAT_BEHAVIOURS:
                hint = suggest(value, dict.fromkeys(NAT_BEHAVIOURS))
                raise ValueError_(f"unknown {key} behaviour '{value}'{hint}", span)
            if key in options:
                raise ValueError_(f"'{key}' is given twice", span)
            options[key] = value
        return options

    # -- the result --------------------------------------------------------------------------

    def finish(self, path: str) -> RuleSet | None:
        for name, define in self.defines.items():
            if not define.used:
                self.out.warning(f"'${name}' is defined but never used", define.span)
        for chain in CHAINS if not self.out.errors else ():
            if chain not in self.policies:
                self.out.warning(
                    f"no 'policy {chain}': {CHAIN_WORDS[chain]} that no rule decides are accepted",
                    self.mode_span or Span(path, 1, 1, 1, 2),
                )
        if self.out.errors or self.mode is None:
            return None
        return self.ruleset()

    def ruleset(self) -> RuleSet:
        unset = Policy(verdict="accept", explicit=False)
        policies = {c: self.policies.get(c, unset) for c in CHAINS}
        return RuleSet(
            mode=self.mode, policies=policies, nat=tuple(self.nat), files=tuple(self.files),
            chains={c: tuple(rules) for c, rules in self.chains.items()},
        )


STDIN = "<stdin>"


def source_name(path: str) -> str:
    """How messages name a rule file: its path, or <stdin> for `-`."""
    return STDIN if path == "-" else path


CHAIN_WORDS: dict[ChainName, str] = {
    "input": "packets to the firewall",
    "forward": "packets through the firewall",
    "output": "packets from the firewall",
}


def part_kind(part: Tree | Token) -> str:
    if isinstance(part, Token):
        return "verdict"
    if part.data.endswith("match"):
        return "match"
    return {"nat_action": "action", "nat_option": "option"}.get(part.data, part.data)


def node_span(node: Tree | Token, path: str) -> Span:
    return token_span(node, path) if isinstance(node, Token) else span_of(node, path)


def describe(kind: str) -> str:
    return {
        "match": "a match", "statement": "a statement (counter, log)", "verdict": "a verdict",
        "comment": "the comment", "action": "a nat action", "option": "a nat option",
        "reject_with": "'reject with'",
    }[kind]


def describe_order(order: int, nat: bool) -> str:
    return {1: "the nat action" if nat else "statements", 2: "the verdict", 3: "the comment"}[order]


def log_option_problem(key: str, value: Token, seen: dict[str, str]) -> str | None:
    if key in seen:
        return f"'{key}' is given twice"
    if key == "prefix" and value.type != "STRING":
        return "a log prefix is a string in double quotes"
    if key == "level" and str(value) not in LOG_LEVELS:
        hint = suggest(str(value), dict.fromkeys(LOG_LEVELS))
        return f"unknown log level '{value}'{hint} (levels: {', '.join(LOG_LEVELS)})"
    return None


def reject_choice(tree: Tree, matches: tuple, span: Span) -> RejectWith:
    """`with tcp reset` on TCP-only rules; `with icmp(v6) type CODE` on rules of that family
    only (nft refuses both otherwise: a TCP reset to UDP, an ICMP error to IPv6)."""
    word, name = (str(c) for c in tree.children)
    family = rule_family(matches)
    if word == "tcp":
        if name != "reset":
            raise ValueError_(f"'reject with tcp {name}': the tcp reply is 'reset'", span)
        if rule_protocols(matches) != {TCP}:
            raise ValueError_("'reject with tcp reset' needs a rule that matches TCP only "
                              "(add 'proto tcp' or a 'tcp' match)", span)
        return RejectWith(kind="tcp-reset")
    version = 4 if word == "icmp" else 6
    table = ICMP_CODES if version == 4 else ICMPV6_CODES
    code = int(name) if name.isdigit() and int(name) <= 255 else table.get(name)
    if code is None:
        hint = suggest(name, table) or f" (codes: {', '.join(table)})"
        raise ValueError_(f"unknown {word} code '{name}'{hint}", span)
    if family != version:
        other = "ip" if version == 4 else "ip6"
        raise ValueError_(f"'reject with {word}' needs a rule that matches IPv{version} only "
                          f"(add an '{other} saddr' or '{other} daddr' match)", span)
    return RejectWith(kind=word, code=code)


def build(path: str, out: Collector) -> RuleSet | None:
    builder = Builder(out)
    try:
        builder.load(path)
    except FwlabError as exc:  # pragma: no cover - every known problem is collected above
        out.error(exc.message, exc.span)
        return None
    return builder.finish(source_name(path)) if builder.files else None
