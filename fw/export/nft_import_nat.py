"""nft NAT chains (table ip) as fwlab's `nat` block.

prerouting `dnat` rules, postrouting `snat`/`masquerade` rules. What fwlab's exporter writes
for one rule comes back as that rule: the per-port-class pieces (`meta l4proto { tcp, udp }
th sport 32768-60999 masquerade to :32768-60999`, ...) followed by the rule without a range are
one `masquerade`; the per-protocol pieces of a ranged `snat` are one `snat to A:P-Q`; the
hairpinning rules are dropped (fwlab does hairpinning by itself). An output nat chain may only
repeat prerouting's rules (what the exporter writes for the firewall's own packets). A `dnat`
to a numgen or jhash map is a pool (nft_import_pool.py).
"""

from __future__ import annotations

from dataclasses import dataclass

from fw.errors import FwlabError
from fw.export.nft_expr import Unsupported
from fw.export.nft_import_pool import is_pool, pool_text
from fw.export.nft_match import implies_proto
from fw.export.nft_nat import HAIRPIN_NOTE, PORT_CLASSES
from fw.export.nft_rules import FwRule, NftChain, NftRule, fw_match, fw_string, parse_rule
from fw.model import Match, PortMatch, PortRange, ProtoMatch

TH_SPORT = {"payload": {"protocol": "th", "field": "sport"}}
PIECE_PROTOS = ((6, 17), (1,))


@dataclass
class NatLine:
    matches: list[Match]
    action: str  # "masquerade", "snat to A", "dnat to A[:P]"
    ports: str | None
    comment: str | None
    piece: str | None  # "class" (a port-class piece) or "range" (a per-protocol piece)
    where: str
    piece_match: Match | None = None  # the protocol match a piece was told by

    @property
    def base(self) -> tuple:
        return (tuple(fw_match(m) for m in self.matches), self.action, self.comment)

    def rule(self) -> FwRule:
        if self.piece == "class":
            raise Unsupported("th sport (a port match for any transport protocol)")
        if self.action == "masquerade" and self.ports:
            raise Unsupported("masquerade to a port range (fwlab's masquerade takes none)")
        lo, _, hi = (self.ports or "").partition("-")
        ports = "" if not self.ports else f":{lo}" if lo == hi else f":{self.ports}"
        matches = [*self.matches, *([self.piece_match] if self.piece_match else [])]
        words = [fw_match(m) for m in matches]
        words += [f"{self.action}{ports}"]
        words += [f"comment {fw_string(self.comment)}"] if self.comment else []
        return FwRule(statements=[" ".join(words)], where=self.where)


class NatImport:
    def __init__(self, skip: bool) -> None:
        self.skip = skip

    def guarded(self, where: str, make):
        """`make()`, or with skip a comment where the rule was; else the error, located."""
        try:
            return make()
        except Unsupported as exc:
            if not self.skip:
                raise FwlabError(f"{where}: error: {exc.message}") from None
            return FwRule(skipped=f"{where}: {exc.what}")

    def lines(self, chain: NftChain, kinds: tuple[str, ...]) -> list[NatLine | FwRule]:
        out = []
        for rule in chain.rules:
            if rule.comment and HAIRPIN_NOTE in rule.comment:
                continue
            out.append(self.guarded(rule.where, lambda r=rule: nat_line(r, chain.family, kinds)))
        return out

    def block(self, dnat: list[NftChain], snat: list[NftChain],
              local: list[NftChain]) -> list[FwRule]:
        dnat_lines = [ln for c in dnat for ln in self.lines(c, ("dnat",))]
        rules = [ln if isinstance(ln, FwRule) else self.guarded(ln.where, ln.rule)
                 for ln in dnat_lines]
        known = {r.text() for r in rules}
        for chain in local:
            for line in self.lines(chain, ("dnat",)):
                rules += self.local(line, known)
        snat_lines = [ln for c in snat for ln in self.lines(c, ("snat", "masquerade"))]
        return rules + self.merged(snat_lines)

    def local(self, line: NatLine | FwRule, known: set[str]) -> list[FwRule]:
        def check() -> list[FwRule]:
            if line.rule().text() not in known:
                raise Unsupported("dnat of the firewall's own packets that prerouting lacks")
            return []
        if isinstance(line, FwRule):
            return [line]
        made = self.guarded(line.where, check)
        return made if isinstance(made, list) else [made]

    def merged(self, lines: list[NatLine | FwRule]) -> list[FwRule]:
        """Pieces followed by their rule without a range become that rule, with the range
        the pieces carry when they are per-protocol pieces of a ranged snat."""
        out: list[FwRule] = []
        pending: list[NatLine] = []
        for line in lines:
            if isinstance(line, NatLine) and line.piece:
                pending.append(line)
                continue
            if isinstance(line, NatLine) and pending and whole(pending, line):
                if pending[0].piece == "range":
                    line.ports = pending[0].ports
                pending = []
            for piece in pending:
                piece.piece = None if piece.piece == "range" else piece.piece
            out += [self.guarded(p.where, p.rule) for p in pending]
            pending = []
            out.append(line if isinstance(line, FwRule) else self.guarded(line.where, line.rule))
        return out + [self.guarded(p.where, p.rule) for p in pending]


def whole(pieces: list[NatLine], line: NatLine) -> bool:
    if line.ports is not None or any(p.base != line.base for p in pieces):
        return False
    kinds = {p.piece for p in pieces}
    if kinds == {"class"}:
        return True
    return kinds == {"range"} and len({p.ports for p in pieces}) == 1


def nat_line(rule: NftRule, family: str, kinds: tuple[str, ...]) -> NatLine:
    if family != "ip":
        raise Unsupported(f"NAT in a table of family {family} (fwlab's NAT is IPv4 only)")
    exprs = [e for e in rule.expr if e.get("match", {}).get("left") != TH_SPORT]
    th = [e["match"]["right"] for e in rule.expr if e.get("match", {}).get("left") == TH_SPORT]
    parsed = parse_rule(NftRule(exprs, rule.comment, rule.where), family, nat=True)
    ending = parsed.ending or {}
    kind, body = next(iter(ending.items())) if ending else (None, None)
    if kind not in kinds:
        raise Unsupported(f"'{kind}' in a nat chain for {'/'.join(kinds)}")
    if body and set(body) - {"addr", "port", "family"}:
        raise Unsupported(f"{kind} with {', '.join(sorted(set(body) - {'addr', 'port'}))}")
    if kind == "dnat" and is_pool(body):
        text, ported = pool_text(body)
        return dnat_line(parsed.matches, f"dnat to {text}", None, rule, ported)
    matches, ports = parsed.matches, port_text(body)
    action = kind if kind == "masquerade" else f"{kind} to {address(body)}"
    if kind == "dnat":
        return dnat_line(matches, action, ports, rule)
    piece = piece_kind(matches, ports, th)
    if piece is None:
        return NatLine(matches, action, ports, rule.comment, None, rule.where)
    return NatLine(matches[:-1], action, ports, rule.comment, piece, rule.where, matches[-1])


def piece_kind(matches: list[Match], ports: str | None, th: list) -> str | None:
    last = matches[-1] if matches else None
    pieces = isinstance(last, ProtoMatch) and not last.negate and ports is not None \
        and tuple(sorted(last.protos)) in PIECE_PROTOS
    if th:
        th_ports = th[0]["range"] if isinstance(th[0], dict) else [th[0], th[0]]
        if not pieces or f"{th_ports[0]}-{th_ports[1]}" != ports or ports not in PORT_CLASSES:
            raise Unsupported("th sport (a port match for any transport protocol)")
        return "class"
    return "range" if pieces else None


def dnat_line(matches: list[Match], action: str, ports: str | None, rule: NftRule,
              ported: bool = False) -> NatLine:
    """fwlab's `dnat to A:P` takes one port and wants a `tcp/udp dport` match (nft wants a
    protocol match only): any port of the protocol is written out. So does a pool that changes
    the port (`ported`)."""
    if ports is not None and "-" in ports:
        lo, hi = ports.split("-")
        if lo != hi:
            raise Unsupported("dnat to a port range (fwlab's engine takes one port)")
        ports = lo
    if (ports is not None or ported) and not any(isinstance(m, PortMatch) and m.kind == "dport"
                                                 for m in matches):
        protos = implies_proto(matches)
        if protos not in ({6}, {17}):
            raise Unsupported("dnat to a port without a TCP or UDP match")
        matches = [*matches, PortMatch(kind="dport", proto=protos.pop(),
                                       ranges=(PortRange(lo=0, hi=65535),))]
    action = f"{action}:{ports}" if ports else action
    return NatLine(matches, action, None, rule.comment, None, rule.where)


def address(body: dict | None) -> str:
    addr = (body or {}).get("addr")
    if not isinstance(addr, str):
        raise Unsupported(f"a NAT address of the form {addr!r}")
    return addr


def port_text(body: dict | None) -> str | None:
    port = (body or {}).get("port")
    if port is None:
        return None
    if isinstance(port, int):
        return f"{port}-{port}"
    if isinstance(port, dict) and "range" in port:
        return f"{port['range'][0]}-{port['range'][1]}"
    raise Unsupported(f"a NAT port of the form {port!r}")
