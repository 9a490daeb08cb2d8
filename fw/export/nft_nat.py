"""fwlab's `nat` block as `table ip fwlab_nat`: what the engine's NAT does, said to the kernel.

- Port choice (fw/engine/nat_mappings.py): the source port is kept when free; otherwise one is
  drawn from 1-1023 for a privileged port and from 32768-60999 for the rest. Linux without a
  range also keeps a free port but draws from 1024-65535 (or 1-511/600-1023). So a rule is
  written once per port class: `th sport 1-1023 ... to :1-1023`, `th sport 32768-60999 ... to
  :32768-60999` (identical to the engine in every case), then the rule without a range for the
  other ports and protocols (identical unless the port is taken). ICMP ids need no range.
- Behaviours (RFC 4787): Linux maps endpoint-independently and filters address-and-port-
  dependently, fwlab's defaults. A rule asking for another is refused (FwlabError at the rule)
  unless `approximate`: then the kernel's behaviour, a comment on the rule and a warning.
- Hairpinning: the engine lets `iif wan ... dnat` serve a LAN host that uses the firewall's
  public address, and source-translates a port-forwarded connection that leaves by the
  interface it came in on. Linux does neither without rules, so both are written out.
"""

from __future__ import annotations

from fw.core.vocab import NatBehaviour
from fw.dsl.diagnostics import Diagnostic
from fw.errors import FwlabError
from fw.export.nft_match import comment_expr, exported_matches, implies_proto, match_expr
from fw.export.nft_pool import pool_action, sticky_note
from fw.model import IfaceMatch, NatRule, RuleSet

KERNEL_MAPPING = NatBehaviour.ENDPOINT_INDEPENDENT
KERNEL_FILTERING = NatBehaviour.ADDRESS_PORT_DEPENDENT
PORT_CLASSES = ("1-1023", "32768-60999")  # fw/engine/nat_mappings.py's PRIVILEGED/DEFAULT_RANGE
HAIRPIN_DNAT = "fib daddr type local fib daddr . iif type != local"
HAIRPIN_NOTE = "fwlab: hairpinning (NAT loopback)"


def nat_table(ruleset: RuleSet, table: str, *, approximate: bool,
              warnings: list[Diagnostic]) -> list[str]:
    """The body of the NAT table (chains), or [] when the rule set has no `nat` block."""
    if not ruleset.nat:
        return []
    dnat = [r for r in ruleset.nat if r.action == "dnat"]
    snat = [r for r in ruleset.nat if r.action != "dnat"]
    notes = {r.index: behaviour_note(r, approximate, warnings) for r in snat}
    sticky = {r.index: sticky_note(r, approximate, warnings) for r in dnat}
    lines = [dnat_line(r, pool_note=sticky[r.index]) for r in dnat]
    chains = [nat_chain("dstnat", "prerouting", [*lines, *hairpin_dnat(dnat, sticky)])
              ] if dnat else []
    local = [r for r in dnat if not positive_iif(r)]
    if local:
        chains.append(nat_chain("output", "output", [
            dnat_line(r, pool_note=sticky[r.index]) for r in local]))
    source = [line for r in snat for line in snat_lines(r, notes[r.index])]
    chains.append(nat_chain("srcnat", "postrouting", source + hairpin_snat(ruleset, dnat)))
    return [line for i, body in enumerate(chains) for line in ([""] if i else []) + body]


def nat_chain(name: str, hook: str, rules: list[str]) -> list[str]:
    # nft 1.0.6 knows `dstnat` in prerouting only; -100 is its value, and the output hook's
    priority = {"postrouting": "srcnat", "prerouting": "dstnat"}.get(hook, "-100")
    head = f"type nat hook {hook} priority {priority}; policy accept;"
    return [f"\tchain {name} {{", f"\t\t{head}", *(f"\t\t{r}" for r in rules), "\t}"]


def words(matches: list[str], action: str, comment: str | None) -> str:
    tail = [comment_expr(comment)] if comment else []
    return " ".join([*matches, action, *tail])


def dnat_line(rule: NatRule, extra: tuple[str, ...] = (), note: str | None = None,
              pool_note: str | None = None) -> str:
    """`dnat to A:P`; the engine takes the first port of a range, and so does the export. A
    pool is a map (nft_pool.py)."""
    kept = [m for m in exported_matches(rule.matches) if not (note and is_iif(m))]
    matches = [*extra, *map(match_expr, kept)]
    comment = joined_comment(joined_comment(rule.comment, pool_note), note)
    if rule.pool is not None:
        return words(matches, pool_action(rule), comment)
    target = str(rule.to_addr) + (f":{rule.to_ports.lo}" if rule.to_ports else "")
    return words(matches, f"dnat to {target}", comment)


def is_iif(match: object) -> bool:
    return isinstance(match, IfaceMatch) and match.kind == "iif"


def positive_iif(rule: NatRule) -> IfaceMatch | None:
    return next((m for m in rule.matches if is_iif(m) and not m.negate), None)


def joined_comment(comment: str | None, note: str | None) -> str | None:
    if comment and note:
        return f"{comment} ({note})"
    return comment or note


def hairpin_dnat(dnat: list[NatRule], sticky: dict[int, str | None]) -> list[str]:
    """Each port forward again for packets to one of the firewall's own addresses that is not
    on the interface they came in by (engine: Nat.loopback). The engine also requires that
    address to be on the rule's `iif`; nft cannot name the interface holding an address, so with
    three or more interfaces the export loops back a little more (docs/export.md)."""
    lines = []
    for rule in dnat:
        iif = next((m for m in rule.matches if is_iif(m)), None)
        if iif is not None:  # `iif wan`: came by another; `iif != wan`: came by wan
            names = match_expr(iif).split(" ", 1)[1].removeprefix("!= ")
            came_by = f"iifname {'' if iif.negate else '!= '}{names}"
            lines.append(dnat_line(rule, (came_by, HAIRPIN_DNAT), HAIRPIN_NOTE,
                                   sticky[rule.index]))
    return lines


def hairpin_snat(ruleset: RuleSet, dnat: list[NatRule]) -> list[str]:
    """A port-forwarded connection leaving by the interface it came in on is masqueraded, or
    the server would answer the client directly. nft cannot compare iifname with oifname, so
    the pairs are listed for every interface the file names."""
    names = sorted({n for r in (*ruleset.rules(), *ruleset.nat) for m in r.matches
                    if isinstance(m, IfaceMatch) for n in m.names})
    if not dnat or not names:
        return []
    pairs = "{ " + ", ".join(f'"{n}" . "{n}"' for n in names) + " }"
    return masquerade_lines(["ct status dnat", f"iifname . oifname {pairs}"], "masquerade", None,
                            HAIRPIN_NOTE, None)


def snat_lines(rule: NatRule, note: str | None) -> list[str]:
    matches = [match_expr(m) for m in exported_matches(rule.matches)]
    action = "masquerade" if rule.action == "masquerade" else f"snat to {rule.to_addr}"
    protos = implies_proto(rule.matches)
    if rule.to_ports is not None:
        return ranged_lines(matches, action, rule.comment, note, protos, str(rule.to_ports))
    return masquerade_lines(matches, action, rule.comment, note, protos)


def ranged_lines(matches: list[str], action: str, comment: str | None, note: str | None,
                 protos: set[int] | None, ports: str) -> list[str]:
    """`snat to A:P-Q`: the engine takes TCP/UDP ports and ICMP ids from the range; nft wants
    the protocol matched before a port range, so one rule each, then the rest without one."""
    text = joined_comment(comment, note)
    lines = [words([*matches, f"meta l4proto {names}"], f"{action}:{ports}", text)
             for names, numbers in (("{ tcp, udp }", {6, 17}), ("icmp", {1}))
             if protos is None or protos & numbers]
    return [*lines, words(matches, action, text)]


def masquerade_lines(matches: list[str], action: str, comment: str | None, note: str | None,
                     protos: set[int] | None) -> list[str]:
    """One rule per port class (see the module's docstring), then the rule without a range."""
    text = joined_comment(comment, note)
    lines = []
    if protos is None or protos & {6, 17}:
        glue = " to " if action == "masquerade" else ""
        for ports in PORT_CLASSES:
            port_matches = [*matches, "meta l4proto { tcp, udp }", f"th sport {ports}"]
            lines.append(words(port_matches, f"{action}{glue}:{ports}", text))
    return [*lines, words(matches, action, text)]


def behaviour_note(rule: NatRule, approximate: bool, warnings: list[Diagnostic]) -> str | None:
    """None when the kernel does what the rule asks; else refuse, or approximate and warn."""
    asked = [(option, value, why) for option, value, kernel, why in (
        ("mapping", rule.mapping, KERNEL_MAPPING,
         "Linux keeps one outside port per inside endpoint while it is free"),
        ("filtering", rule.filtering, KERNEL_FILTERING,
         "Linux lets in only the endpoint a connection was opened to"),
    ) if value != kernel]
    if not asked:
        return None
    option, value, why = asked[0]
    if not approximate:
        raise FwlabError(f"the kernel cannot give '{option} {value}' ({why}); "
                         "--approximate exports the kernel's behaviour instead", rule.span)
    differs = ", ".join(f"{o} {v}" for o, v, _ in asked)
    note = f"fwlab approximates {differs} (kernel behaviour)"
    warnings.append(Diagnostic("warning", f"exported approximately: {differs} is not what the "
                               f"kernel does ({why}); the script uses the kernel's behaviour",
                               rule.span))
    return note
