"""The lab commands for a lab whose firewall is the kernel (`fwlab up --engine kernel`).

`up`, `status`, `conntrack`, `nat`, `reload` and `logs` ask the lab's state which engine runs
and hand a kernel lab to the functions here (fw/lab/kernel_engine.py does the work): the same
commands, with nft's counters and the kernel's conntrack table instead of the daemon's answers.
This module imports no other lab command module, so the hooks cannot make an import circle.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from fw.commands.output import print_json, rules_table, stderr, stdout
from fw.errors import LabError

if TYPE_CHECKING:
    from fw.commands.common import KnownInterfaces

__all__ = ["check_engine", "entries", "logs", "prepare", "reload", "runs_kernel", "show_status",
           "status_answer"]

LOGS_LINE = ("the kernel engine has no log fwlab can read (nft's `log` in a network namespace "
             "goes to the kernel log, if anywhere); `fwlab status` has each rule's counters")


def check_engine(engine: str, fail_open: bool = False) -> bool:
    """True for the kernel engine; an unknown engine, or --fail-open with the kernel (there is
    no daemon to fail), is a one-line error."""
    from fw.lab.kernel_engine import ENGINES, KERNEL

    if engine not in ENGINES:
        raise LabError(f"--engine {engine!r}: one of {', '.join(ENGINES)}")
    if engine == KERNEL and fail_open:
        raise LabError("--fail-open is for the engine daemon; the kernel engine has none")
    return engine == KERNEL


def runs_kernel(state: dict[str, Any] | None) -> bool:
    from fw.lab.kernel_engine import KERNEL, engine_of

    return engine_of(state) == KERNEL


def prepare(rules_file: Path, ruleset: Any, mapping: dict[str, str] | None = None) -> Any:
    """The exported script (with the devices of `mapping` for the rule file's interface names),
    before the lab is built: a rule the kernel cannot run is an error at its line (exit 2) and
    nothing is built."""
    from fw.lab.kernel_engine import prepare as prepare_rules

    return prepare_rules(rules_file, ruleset, mapping)


def running(name: str, state: dict[str, Any]) -> bool:
    """A kernel lab is up when its firewall namespace has fwlab's table."""
    from fw.lab import kernel_engine
    from fw.lab import netns as labns

    try:
        kernel_engine.nft(labns.attach(name).firewall_ns, ["list", "table", "inet", "fwlab"])
    except LabError:
        return False
    return state.get("status") == "up" and "kernel" in state


# -- status -------------------------------------------------------------------------------------


def status_answer(name: str, state: dict[str, Any]) -> dict[str, Any]:
    """What `status` shows of a kernel lab: the rules with nft's counters, the conntrack table's
    size; {"ok": False, "error"} when the firewall namespace or its table is gone."""
    from fw.lab import kernel_engine
    from fw.lab import netns as labns

    kernel = state.get("kernel") or {}
    ns = labns.attach(name).firewall_ns
    try:
        chains = kernel_engine.counters(ns, kernel["chains"])
        entries, limit = conntrack_size(name)
    except (LabError, KeyError, ValueError) as exc:
        return {"ok": False, "engine": "kernel", "error": f"{exc}"}
    return {"ok": True, "engine": "kernel", "namespace": ns, "rules": kernel.get("rules"),
            "mode": kernel.get("mode"), "reloads": kernel.get("reloads", 0),
            "loaded": kernel.get("loaded"), "engine_status": {"chains": chains},
            "conntrack": {"entries": entries, "limit": limit}}


def conntrack_size(name: str) -> tuple[int | None, int | None]:
    from fw.lab import netns as labns

    handle = labns.attach(name)
    res = handle.run(handle.firewall_host, ["cat", "/proc/sys/net/netfilter/"
                     "nf_conntrack_count", "/proc/sys/net/netfilter/nf_conntrack_max"])
    values = [int(v) for v in res.stdout.split()] if res.returncode == 0 else []
    return (values[0], values[1]) if len(values) == 2 else (None, None)


def show_status(answer: dict[str, Any]) -> None:
    """The engine part of `status` for a kernel lab (the hosts are shown before it)."""
    if not answer.get("ok"):
        stdout.print(f"[bold red]kernel engine: not loaded[/]: {answer.get('error', '')}")
        return
    loaded = answer.get("loaded") or time.time()
    stdout.print(f"engine: the kernel (nftables, table inet fwlab) in {answer['namespace']}; "
                 f"no daemon, no queue", markup=False)
    stdout.print(f"rules: {answer['rules']} ({answer['mode']}), reloads {answer['reloads']}, "
                 f"loaded {time.time() - loaded:.0f} s ago", markup=False)
    ct = answer["conntrack"]
    stdout.print(f"conntrack (the kernel's): {ct['entries']} entries (limit {ct['limit']})")
    stdout.print(rules_table(answer["engine_status"]["chains"]))
    stdout.print("counters are nft's, since the last load; `sudo fwlab logs` has nothing for "
                 "the kernel engine", markup=False)


# -- conntrack / nat ------------------------------------------------------------------------------


def entries(name: str, what: str) -> list[dict]:
    """`conntrack` or `nat` rows of a kernel lab, read from the kernel's table."""
    from fw.lab import kernel_conntrack
    from fw.lab import netns as labns

    flows = kernel_conntrack.read_flows(labns.attach(name).firewall_ns)
    if what == "nat":
        return kernel_conntrack.nat_rows(flows)
    return kernel_conntrack.conntrack_rows(flows)


# -- reload / logs --------------------------------------------------------------------------------


def reload(name: str, path: Path, state: dict[str, Any], as_json: bool, seconds: float,
           interfaces: KnownInterfaces | None = None) -> None:
    """Compile the new file (within `seconds`, as for the engine), export it and load it in one
    nft transaction, under the lab's lock; the old rules stay on any error. With `interfaces`,
    a file naming others is refused."""
    from fw.commands.common import refuse_unknown_interfaces
    from fw.errors import FwlabError, RulesError
    from fw.lab import kernel_engine, rulestore
    from fw.lab.engine_glue import render_diagnostics
    from fw.lab.lablock import lab_lock

    try:
        ruleset = rulestore.compile_rules(path, seconds)
        refuse_unknown_interfaces(ruleset, interfaces)
        mapping = (state.get("attached") or {}).get("ifaces")
        prepared = kernel_engine.prepare(path, ruleset, mapping)
        with lab_lock(name, "reload", timeout=seconds):
            answer = kernel_engine.reload(name, prepared, state)
    except RulesError as exc:
        for text in render_diagnostics(exc):
            stderr.print(text, markup=False, highlight=False)
        raise LabError(f"{path}: rules not loaded, the old rules stay") from None
    except LabError:
        raise  # a timeout or a busy lab: the message says that nothing changed
    except FwlabError as exc:  # a rule the kernel cannot run
        raise LabError(f"{exc}; the old rules stay") from None
    if as_json:
        print_json(answer)
        return
    stdout.print(f"lab {name!r} now runs {answer['rules']} ({answer['mode']}) in the kernel",
                 markup=False)


def logs() -> None:
    stderr.print(f"fwlab: {LOGS_LINE}", markup=False, highlight=False)
    raise typer.Exit(1)
