"""`fwlab attach` and `fwlab detach`: fwlab's engine (or the kernel running the exported rules) in
front of a network namespace fwlab did not build: a containerlab or docker node, a namespace of
one's own (fw/lab/attachment.py does the work, fw/lab/ifmap.py maps the interfaces).

An attachment is a lab without namespaces of its own: it has a name, a state file and a runtime
directory like a lab, so `status`, `conntrack`, `nat`, `logs`, `reload`, `restart`, `capture`,
`trace` and `list` take its `--name`; its one host is `fw` (the namespace). `detach` removes
what `attach` added and nothing else: never the namespace, its devices or its routes.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from fw.commands.options import (
    OPENER_LIMIT,
    OPENERS_MAXLEN,
    Backend,
    BackendOpt,
    ConntrackMaxOpt,
    EngineOpt,
    NameOpt,
    OpenerLimitOpt,
    OpenersMaxlenOpt,
    WorkersOpt,
    default_workers,
    need_root,
)
from fw.commands.output import stderr, stdout
from fw.errors import LabError

__all__ = ["attach", "detach", "lab_or_attachment"]

LOCK_WAIT = 30.0


def attach(
    netns: Annotated[str, typer.Argument(help="The network namespace (as `ip netns list` names "
                                         "it) to put the firewall in front of.")],
    iface: Annotated[list[str], typer.Option(
        "--iface", help="NAME=DEVICE: the rule file's interface NAME is the namespace's DEVICE "
        "(repeat it: --iface lan=eth1 --iface wan=eth2).")],
    rules: Annotated[str, typer.Option("--rules", help="The rule file to run.")],
    name: Annotated[str | None, typer.Option(
        "--name", help="Name for status, reload, detach, ... (default: the namespace's name, "
        "letters and digits only).")] = None,
    engine: EngineOpt = "fwlab",
    backend: BackendOpt = Backend.netlink,
    fail_open: Annotated[bool, typer.Option(
        "--fail-open", help="Let packets through unjudged when the engine daemon is not running. "
        "Default: fail closed, drop them.")] = False,
    conntrack_max: ConntrackMaxOpt = None,
    openers_maxlen: OpenersMaxlenOpt = OPENERS_MAXLEN,
    opener_limit: OpenerLimitOpt = OPENER_LIMIT,
    workers: WorkersOpt = None,
) -> None:
    """Run the firewall in front of an existing network namespace; routing stays the namespace's."""
    need_root("attach")
    from fw.commands import kernel_lab
    from fw.commands.lab import check_rules
    from fw.lab import attachment, ifmap
    from fw.lab.engine_glue import rules_path
    from fw.lab.lablock import lab_lock
    from fw.lab.rulestore import StoredRules
    from fw.lab.runtime import check_lab_name
    from fw.lab.topology import DEFAULT_CONNTRACK_MAX

    name = check_lab_name(name if name is not None else default_name(netns))
    mapping = ifmap.parse(iface)
    workers = default_workers(workers)
    refuse_taken(name)
    devices = attachment.check_namespace(netns, mapping)
    rules_file = rules_path(None, rules)
    stored = StoredRules(str(rules_file), check_rules(rules_file, "nothing attached"))
    for warning in ifmap.unmapped_warnings(mapping, stored.ruleset, devices):
        stderr.print(f"fwlab: warning: {warning}", markup=False, highlight=False)
    kernel = (kernel_lab.prepare(rules_file, stored.ruleset, mapping)
              if kernel_lab.check_engine(engine, fail_open) else None)
    with lab_lock(name, "attach", timeout=LOCK_WAIT):
        refuse_taken(name)
        attachment.check_namespace(netns, mapping)  # another attach may have won meanwhile
        t0 = time.monotonic()
        pid = _start(name, netns, mapping, stored, kernel, fail_open,
                     conntrack_max or DEFAULT_CONNTRACK_MAX, str(backend),
                     attachment.Openers(openers_maxlen, opener_limit), workers)
    _show(name, netns, mapping, rules_file, pid, fail_open, time.monotonic() - t0)


def default_name(netns: str) -> str:
    """The namespace's name as a lab name: letters and digits, lower case, at most 20."""
    short = re.sub(r"[^a-z0-9]", "", netns.lower())[:20]
    if not short:
        raise LabError(f"namespace {netns!r} gives no name: pass --name NAME")
    return short


def refuse_taken(name: str) -> None:
    """A name a lab or an attachment uses (or a half-built lab's namespaces still carry)."""
    from fw.lab import netns as labns

    if labns.read_state(name) is not None or labns.lab_namespaces(name):
        raise LabError(f"the name {name!r} is in use (`sudo fwlab list`); "
                       "pick another with --name")


def _start(name: str, netns: str, mapping: dict[str, str], stored: Any, kernel: Any,
           fail_open: bool, conntrack_max: int, backend: str, openers: Any,
           workers: int = 1) -> int | None:
    from fw.commands.lab import daemon_output_tail
    from fw.lab import attachment
    from fw.lab import netns as labns

    labns.update_state(name, status="attaching", created=time.time())
    try:
        pid = attachment.start(name, netns, mapping, stored=stored, kernel=kernel,
                               fail_open=fail_open, conntrack_max=conntrack_max, backend=backend,
                               openers=openers, workers=workers)
    except BaseException as exc:
        detail = daemon_output_tail(name)
        labns.remove_run_dir(name)
        if isinstance(exc, LabError):
            raise LabError(f"{exc}{': ' + detail if detail else ''}; nothing left attached") \
                from None
        raise
    labns.update_state(name, status="up")
    return pid


def _show(name: str, netns: str, mapping: dict[str, str], rules_file: Path, pid: int | None,
          fail_open: bool, seconds: float) -> None:
    ifaces = ", ".join(f"{n}={d}" for n, d in mapping.items())
    engine = (f"engine daemon pid {pid} ({'fail open' if fail_open else 'fail closed'})" if pid
              else "engine: the kernel's nftables")
    stdout.print(f"[bold green]attached {name!r}[/] to namespace {netns} ({ifaces}) in "
                 f"{seconds:.2f} s", highlight=False)
    stdout.print(f"{engine}, rules {rules_file}", markup=False)
    flag = f" --name {name}"
    stdout.print("\n[bold]Try:[/]")
    for line in (f"sudo fwlab status{flag}", f"sudo fwlab conntrack{flag}",
                 f"sudo fwlab reload{flag} {rules_file}", f"sudo fwlab detach{flag}"):
        stdout.print(f"  {line}", markup=False, highlight=False)


def detach(name: NameOpt = "default") -> None:
    """Stop the firewall `attach` started: its rules, sysctls and processes, nothing else."""
    need_root("detach")
    from fw.lab import attachment
    from fw.lab import netns as labns
    from fw.lab.lablock import lab_lock
    from fw.lab.runtime import check_lab_name

    check_lab_name(name)
    with lab_lock(name, "detach", timeout=LOCK_WAIT):
        state = lab_or_attachment(name)
        if state.get("topology"):
            raise LabError(f"{name!r} is a lab fwlab built: `sudo fwlab down --name {name}` "
                           "removes it")
        done = attachment.stop(name)
        labns.remove_run_dir(name)
    netns = state.get("attached", {}).get("netns", "?")
    stdout.print(f"detached {name!r} from namespace {netns}: {'; '.join(done)}", markup=False)


def lab_or_attachment(name: str) -> dict[str, Any]:
    """The state of lab or attachment `name`; the usual 'no lab' error naming the others."""
    from fw.lab import control
    from fw.lab import netns as labns

    state = labns.read_state(name)
    if state is None:
        raise control.no_lab(name)
    return state
