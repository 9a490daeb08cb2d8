"""The kernel as the lab's firewall (`fwlab up --engine kernel`): the exported rule set in nft.

The same lab as with fwlab's engine, but the firewall namespace runs `fwlab export`'s script
(fw/export/nft.py) in its own netfilter: no queue, no notrack of the lab's making, the kernel's
own conntrack and NAT. What the lab adds to the script, in the same `nft -f` transaction:

- loopback is accepted first in `input` and `output`, as the engine daemon never judges it;
- a last rule with a bare `counter` in each base chain: what reaches it is what the policy
  decides, so `status` can show the policy's hits as it does for the engine.

`status` reads `nft -j list table inet fwlab` and puts each base chain's rules beside the rule
file's: the export writes one nft rule per rule, in order, after rules it adds itself (which all
carry a comment of their own), so the position is the mapping. The rule file's lines are kept
in the lab's state when the rules are loaded, so an edit of the file after `up` cannot shift
them. A reload loads the new script, which replaces the tables whole in one transaction; nft's
counters then start again from zero.
"""

from __future__ import annotations

import json
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fw.errors import LabError
from fw.export.nft import LINK_CONTROL_NOTE, TABLE, to_nft
from fw.lab import ifmap
from fw.lab import netns as labns
from fw.model import CHAINS, RuleSet

__all__ = [
    "ENGINES", "KERNEL", "Prepared", "counters", "engine_of", "load", "prepare", "reload",
    "start",
]

FWLAB, KERNEL = "fwlab", "kernel"
ENGINES = (FWLAB, KERNEL)
LOOPBACK_NOTE = "fwlab lab: loopback is not judged (as by the engine daemon)"
POLICY_NOTE = "fwlab lab: reaching here, the policy decides"
LAB_NOTES = frozenset({LINK_CONTROL_NOTE, LOOPBACK_NOTE, POLICY_NOTE})
NFT_TIMEOUT = 30.0


@dataclass(frozen=True)
class Prepared:
    """A rule file ready for the kernel: its rule set and the script that loads it."""

    path: Path
    ruleset: RuleSet
    script: str


def engine_of(state: dict[str, Any] | None) -> str:
    """Which engine a lab runs, from its state; labs from before the choice ran fwlab's."""
    return (state or {}).get("engine") or FWLAB


def prepare(path: Path, ruleset: RuleSet, mapping: dict[str, str] | None = None) -> Prepared:
    """Export the rule set compiled from `path`, with the devices of `mapping` (rule file's name
    -> device, fw/lab/ifmap.py) in place of the names; a rule the kernel cannot run is a
    FwlabError at its line (exit 2) before anything is built or replaced."""
    return Prepared(path, ruleset, to_nft(ifmap.rename(ruleset, mapping)).text
                    + lab_additions())


def lab_additions() -> str:
    """nft commands after the export's tables, in the same transaction (see the docstring)."""
    lines = [f'insert rule inet {TABLE} input iifname "lo" accept comment "{LOOPBACK_NOTE}"',
             f'insert rule inet {TABLE} output oifname "lo" accept comment "{LOOPBACK_NOTE}"']
    lines += [f'add rule inet {TABLE} {chain} counter comment "{POLICY_NOTE}"'
              for chain in CHAINS]
    return "\n# added by the lab (fw/lab/kernel_engine.py)\n" + "\n".join(lines) + "\n"


def nft(ns: str, args: list[str], script: str | None = None) -> str:
    """Run nft in the namespace `ns` (never the caller's); its stdout, or a LabError with nft's
    first complaint."""
    argv = ["ip", "netns", "exec", ns, "nft", *args]
    try:
        res = subprocess.run(argv, input=script, capture_output=True, text=True,
                             timeout=NFT_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LabError(f"nft in {ns}: {exc}") from None
    if res.returncode != 0:
        first = next((line for line in res.stderr.splitlines() if line.strip()), "failed")
        raise LabError(f"nft {' '.join(args)} in {ns}: {first.strip()}")
    return res.stdout


def load(ns: str, prepared: Prepared) -> None:
    """One transaction: the old tables out, the new ones in; nothing changes if nft refuses."""
    nft(ns, ["-f", "-"], prepared.script)


def rule_lines(ruleset: RuleSet) -> dict[str, Any]:
    """The rule file's side of the counters, kept in the lab's state: per chain the policy and
    each rule's file, line and text."""
    return {chain: {"policy": ruleset.policies[chain].verdict,
                    "rules": [{"file": r.span.file if r.span else None,
                               "line": r.span.line if r.span else None, "text": r.text}
                              for r in ruleset.chains[chain]]}
            for chain in CHAINS}


def record(name: str, prepared: Prepared, reloads: int) -> None:
    labns.update_state(name, engine=KERNEL, kernel={
        "rules": str(prepared.path), "mode": prepared.ruleset.mode,
        "chains": rule_lines(prepared.ruleset), "loaded": time.time(), "reloads": reloads})


def start(handle: labns.LabHandle, prepared: Prepared) -> None:
    """Load the rules into the firewall namespace and record that the kernel is the engine (the
    per-flow counters of conntrack are among the sysctls fw/lab/attachment.py sets)."""
    labns.update_state(handle.name, engine=KERNEL)
    load(handle.firewall_ns, prepared)
    record(handle.name, prepared, reloads=0)


def reload(name: str, prepared: Prepared, state: dict[str, Any]) -> dict[str, Any]:
    """Swap the rules of a running kernel lab (`state`: its state file) atomically; the old
    ones stay if nft refuses."""
    load(labns.attach(name).firewall_ns, prepared)
    record(name, prepared, reloads=int(state.get("kernel", {}).get("reloads", 0)) + 1)
    return {"ok": True, "engine": KERNEL, "rules": str(prepared.path),
            "mode": prepared.ruleset.mode}


# -- counters -----------------------------------------------------------------------------------


def counters(ns: str, recorded: dict[str, Any]) -> dict[str, Any]:
    """Per base chain, as fw/views.py's chain_counters: the policy with its hits and bytes, and
    each rule of the file with nft's counter. A chain whose nft rules do not line up with the
    file's (someone changed the table by hand) says so in `mismatch` instead of guessing."""
    listed = json.loads(nft(ns, ["-j", "list", "table", "inet", TABLE]))["nftables"]
    rules: dict[str, list[dict]] = {chain: [] for chain in CHAINS}
    for item in listed:
        rule = item.get("rule")
        if rule and rule.get("chain") in rules:
            rules[rule["chain"]].append(rule)
    return {chain: chain_counters(rules[chain], recorded[chain]) for chain in CHAINS}


def counted(rule: dict) -> tuple[int, int]:
    for expr in rule.get("expr", []):
        if "counter" in expr and isinstance(expr["counter"], dict):
            return int(expr["counter"].get("packets", 0)), int(expr["counter"].get("bytes", 0))
    return 0, 0


def chain_counters(nft_rules: list[dict], recorded: dict[str, Any]) -> dict[str, Any]:
    ours = [r for r in nft_rules if r.get("comment") not in LAB_NOTES]
    policy = [r for r in nft_rules if r.get("comment") == POLICY_NOTE]
    hits, size = counted(policy[-1]) if policy else (0, 0)
    out: dict[str, Any] = {"policy": recorded["policy"], "policy_hits": hits,
                           "policy_bytes": size, "rules": []}
    if len(ours) != len(recorded["rules"]):
        out["mismatch"] = (f"nft has {len(ours)} rule(s), the rule file {len(recorded['rules'])}"
                           ": the table was changed outside fwlab")
        return out
    for rule, nft_rule in zip(recorded["rules"], ours, strict=True):
        hits, size = counted(nft_rule)
        out["rules"].append({**rule, "hits": hits, "bytes": size, "handle": nft_rule["handle"]})
    return out
