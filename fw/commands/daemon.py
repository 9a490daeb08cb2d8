"""The commands that talk to a lab's engine daemon or are it: `fwlab reload`, `fwlab restart`, and
the hidden entry points `fwlab supervise` (what `up` starts) and `fwlab run` (the daemon itself).

`reload` reads and compiles the rule file in its own process, within `--timeout` seconds, and
sends the daemon the compiled rules with that deadline: the daemon applies them before it or not
at all, and the command says which. A rule file that cannot be read in time (an include of a
FIFO) ends the command with exit 2 and never reaches the daemon.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from fw.commands.options import (
    Backend,
    BackendOpt,
    ConntrackMaxOpt,
    ForceOpt,
    JsonOpt,
    NameOpt,
    OpenersMaxlenOpt,
    need_root,
)
from fw.commands.output import print_json, stderr, stdout
from fw.errors import LabError, RulesError

if TYPE_CHECKING:
    from fw.commands.common import KnownInterfaces

__all__ = ["reload", "restart", "run", "supervise"]

RELOAD_SECONDS = 10.0
ANSWER_GRACE = 5.0  # beyond the deadline, for the daemon's answer to arrive


def _need_lab(name: str) -> None:
    from fw.lab import control, runtime

    if not runtime.state_path(name).exists():
        raise control.no_lab(name)


# -- reload -------------------------------------------------------------------------------------


def reload(
    rules: Annotated[str, typer.Argument(help="The rule file to run from now on.")],
    name: NameOpt = "default",
    timeout: Annotated[float, typer.Option(
        "--timeout", min=0.1, help="Seconds to read, compile and apply it; else nothing changes."
    )] = RELOAD_SECONDS,
    as_json: JsonOpt = False,
    force: ForceOpt = False,
) -> None:
    """Swap the running rules atomically; connections survive. A file with errors is refused,
    and so is one naming interfaces the lab's firewall lacks (unless --force)."""
    need_root("reload")
    path = Path(rules).expanduser().resolve()
    if not path.is_file():
        raise LabError(f"rule file {rules} does not exist")
    _need_lab(name)
    from fw.commands import kernel_lab
    from fw.lab.netns import read_state

    interfaces = None if force else lab_interfaces(name)
    if kernel_lab.runs_kernel(state := read_state(name)):
        return kernel_lab.reload(name, path, state or {}, as_json, timeout, interfaces)
    answer = _reload(name, path, time.monotonic() + timeout, interfaces)
    if as_json:
        print_json(answer)
        if not answer.get("ok"):
            raise typer.Exit(2)
        return
    if not answer.get("ok"):
        for text in answer.get("diagnostics", []):
            stderr.print(text, markup=False, highlight=False)
        raise LabError(answer.get("error", "reload refused"))
    stdout.print(f"lab {name!r} now runs {answer['rules']} ({answer['mode']})", markup=False)


def lab_interfaces(name: str) -> KnownInterfaces:
    """The interfaces of the running lab's firewall (what its rules may name): a lab's are its
    topology's; an attachment's are the names it maps and its namespace's other devices
    (fw/lab/ifmap.py)."""
    from fw.commands.common import KnownInterfaces
    from fw.lab.ifmap import namespace_devices
    from fw.lab.netns import attach

    handle = attach(name)
    if handle.topology is not None:
        return KnownInterfaces.of_topology(handle.devices)
    mapped = set(handle.devices.values())
    others = [d for d in namespace_devices(handle.firewall_ns) if d not in mapped and d != "lo"]
    return KnownInterfaces.of_attachment(name, handle.firewall_ns, handle.devices, others)


def _reload(name: str, path: Path, deadline: float,
            interfaces: KnownInterfaces | None = None) -> dict[str, Any]:
    """Compile here, then hand the daemon the result under the lab's lock, all by `deadline`.
    With `interfaces`, a file naming others is refused before the daemon hears of it."""
    from fw.commands.common import refuse_unknown_interfaces
    from fw.lab import control, rulestore
    from fw.lab.engine_glue import render_diagnostics
    from fw.lab.lablock import lab_lock

    try:
        ruleset = rulestore.compile_rules(path, deadline - time.monotonic())
    except RulesError as exc:
        return {"ok": False, "applied": False, "diagnostics": render_diagnostics(exc),
                "error": f"{path}: rules not loaded, the old rules stay"}
    except rulestore.RulesTimeout as exc:
        return {"ok": False, "applied": False, "error": str(exc)}
    try:
        refuse_unknown_interfaces(ruleset, interfaces)
    except LabError as exc:
        return {"ok": False, "applied": False, "error": str(exc)}
    request = {"cmd": "reload", "deadline": deadline,
               "compiled": rulestore.encode(rulestore.StoredRules(str(path), ruleset))}
    with lab_lock(name, "reload", timeout=max(0.0, deadline - time.monotonic())):
        count = control.worker_count(name)
        answers = _fan_out(name, request, deadline, count)
        if count == 1:
            return answers[0]
        return _reloaded_workers(name, ruleset, answers)


def _ask_reload(name: str, request: dict[str, Any], deadline: float,
                worker: int) -> dict[str, Any]:
    from fw.lab import control

    try:
        return control.request(name, request, deadline - time.monotonic() + ANSWER_GRACE,
                               worker=worker)
    except control.DaemonBusy:
        return {"ok": False, "applied": False,
                "error": f"lab {name!r}: the engine daemon did not answer by the deadline; "
                "it applies a reload only before it, so the old rules stay"}
    except LabError as exc:
        return {"ok": False, "applied": False, "error": str(exc)}


def _fan_out(name: str, request: dict[str, Any], deadline: float,
             count: int) -> list[dict[str, Any]]:
    """Every worker asked at once, with the one deadline."""
    if count == 1:
        return [_ask_reload(name, request, deadline, 0)]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(count) as pool:
        return list(pool.map(lambda w: _ask_reload(name, request, deadline, w), range(count)))


def _reloaded_workers(name: str, ruleset: Any, answers: list[dict[str, Any]]) -> dict[str, Any]:
    """Several workers' answers as one; when every worker applied the rules, the steering
    follows their port forwards (fw/lab/steering.py). Some applied, some not: said, loudly."""
    from fw.lab import steering
    from fw.lab.netns import read_state

    refused = [(w, a) for w, a in enumerate(answers) if not a.get("applied")]
    if not refused:
        ns = ((read_state(name) or {}).get("attached") or {}).get("netns")
        try:
            steering.install(ns, steering.script(len(answers), ruleset))
        except RuntimeError as exc:
            return {**answers[0], "ok": False, "workers": answers,
                    "error": f"the rules run, but the steering of port forwards failed: {exc}"}
        return {**answers[0], "workers": answers}
    why = "; ".join(f"worker {w}: {a.get('error')}" for w, a in refused)
    if len(refused) < len(answers):
        why = (f"only {len(answers) - len(refused)} of {len(answers)} workers applied the "
               f"rules (`fwlab restart` makes them agree again): {why}")
    return {"ok": False, "applied": len(refused) < len(answers), "workers": answers,
            "error": why}


# -- restart ------------------------------------------------------------------------------------


def restart(name: NameOpt = "default") -> None:
    """Start the engine daemon again (connections start over); namespaces, processes stay."""
    need_root("restart")
    from fw.lab import netns as labns
    from fw.lab.lablock import lab_lock
    from fw.lab.supervisor import request_restart

    _need_lab(name)
    _refuse_kernel_restart(name)
    with lab_lock(name, "restart"):
        pid = request_restart(labns.attach(name))
    stdout.print(
        f"lab {name!r}: engine daemon restarted, pid {pid}; connections and NAT mappings start "
        "over", markup=False,
    )


def _refuse_kernel_restart(name: str) -> None:
    """The kernel engine has no daemon: restarting one would start fwlab's daemon with no queue
    in front of it, which exits at once. What the user may want is loading the rules again."""
    from fw.commands import kernel_lab
    from fw.lab.netns import read_state

    state = read_state(name) or {}
    if kernel_lab.runs_kernel(state):
        rules = (state.get("kernel") or {}).get("rules") or "RULES"
        raise LabError(f"lab {name!r} runs the kernel engine: there is no daemon to restart; "
                       f"`sudo fwlab reload --name {name} {rules}` loads the rules again")


# -- hidden: the supervisor and the daemon ------------------------------------------------------


def supervise(
    name: NameOpt = "default",
    fail_open: Annotated[bool, typer.Option("--fail-open", help="For status only.")] = False,
    conntrack_max: ConntrackMaxOpt = None,
    backend: BackendOpt = Backend.netlink,
    openers_maxlen: OpenersMaxlenOpt = 0,
    workers: Annotated[int, typer.Option("--workers", min=1, help="Engine processes.")] = 1,
) -> None:
    """The supervisor of a lab's engine daemon (what `fwlab up` starts in the firewall)."""
    from fw.lab.supervisor import supervise as run_supervisor
    from fw.lab.topology import DEFAULT_CONNTRACK_MAX

    raise typer.Exit(run_supervisor(name, fail_open=fail_open, backend=str(backend),
                                    conntrack_limit=conntrack_max or DEFAULT_CONNTRACK_MAX,
                                    openers_maxlen=openers_maxlen, workers=workers))


def run(
    name: NameOpt = "default",
    rules: Annotated[str | None, typer.Option(
        "--rules", help="Rule file (default: what the lab ran last, else the topology's).")] = None,
    queue: Annotated[int, typer.Option("--queue", help="NFQUEUE number.")] = 0,
    fail_open: Annotated[bool, typer.Option("--fail-open", help="For status only.")] = False,
    conntrack_max: ConntrackMaxOpt = None,
    backend: BackendOpt = Backend.netlink,
    openers_maxlen: OpenersMaxlenOpt = 0,
) -> None:
    """The engine daemon of a lab, without a supervisor (`fwlab up` runs it under one)."""
    from fw.lab.daemon import run as run_daemon
    from fw.lab.topology import DEFAULT_CONNTRACK_MAX

    raise typer.Exit(run_daemon(name, rules, queue_num=queue, fail_open=fail_open,
                                backend=str(backend), openers_maxlen=openers_maxlen,
                                conntrack_limit=conntrack_max or DEFAULT_CONNTRACK_MAX))
