"""The lab commands. This module holds `fwlab up`, `down`, `exec`, `shell`, `conntrack`, `nat`
and `register(app)`, which adds every lab command to the main app; the others live beside it:

    fw/commands/attach.py    `attach` and `detach` (registered in fw/cli.py)

    fw/commands/options.py   the options every command shares (--name, --json) and need_root
    fw/commands/status.py    `status`
    fw/commands/daemon.py    `reload`, `restart`, and the hidden `supervise` and `run`
    fw/commands/logs.py      `logs`

A new command goes in a module of its own, takes its options from options.py and is added in
`register`. Module level imports stay light (typer and the error types): pyroute2,
netfilterqueue and the engine are imported inside the commands that need them, so `fwlab check`
does not pay for them.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from fw.commands import daemon, logs, status
from fw.commands.options import (
    OPENER_LIMIT,
    OPENERS_MAXLEN,
    Backend,
    BackendOpt,
    ConntrackMaxOpt,
    EngineOpt,
    ForceOpt,
    JsonOpt,
    NameOpt,
    OpenerLimitOpt,
    OpenersMaxlenOpt,
    WorkersOpt,
    default_workers,
    need_root,
)
from fw.commands.output import print_json, rows_table, stderr, stdout
from fw.errors import LabError

LOCK_WAIT = 30.0  # seconds an `up` or `down` waits for another one on the same lab


def register(app: typer.Typer) -> None:
    """Add the lab commands to the `fwlab` app."""
    app.command("up")(up)
    app.command("down")(down)
    app.command("status")(status.status)
    app.command(
        "exec", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
    )(exec_)
    app.command("shell")(shell)
    app.command("conntrack")(conntrack)
    app.command("nat")(nat)
    app.command("reload")(daemon.reload)
    app.command("restart")(daemon.restart)
    app.command("logs")(logs.logs)
    app.command("run", hidden=True)(daemon.run)
    app.command("supervise", hidden=True)(daemon.supervise)


# -- up / down ----------------------------------------------------------------------------------


def up(
    topology: Annotated[
        str | None, typer.Argument(help="Topology file (YAML); the default lab when omitted.")
    ] = None,
    rules: Annotated[
        str | None, typer.Option("--rules", help="Rule file; overrides the topology's.")
    ] = None,
    name: NameOpt = "default",
    fail_open: Annotated[
        bool,
        typer.Option(
            "--fail-open",
            help="Let packets through unjudged when the engine daemon is not running "
            "(the queue's bypass flag). Default: fail closed, drop them.",
        ),
    ] = False,
    conntrack_max: ConntrackMaxOpt = None,
    engine: EngineOpt = "fwlab",
    backend: BackendOpt = Backend.netlink,
    force: ForceOpt = False,
    openers_maxlen: OpenersMaxlenOpt = OPENERS_MAXLEN,
    opener_limit: OpenerLimitOpt = OPENER_LIMIT,
    workers: WorkersOpt = None,
) -> None:
    """Build a lab of network namespaces and start the engine daemon in its firewall.

    A lab is its namespaces (fw/lab/netns.py) plus an attach to its firewall namespace
    (fw/lab/attachment.py, as `fwlab attach` does), each firewall interface mapped to itself."""
    need_root("up")
    from fw.commands import kernel_lab
    from fw.commands.common import KnownInterfaces, refuse_unknown_interfaces
    from fw.lab import attachment
    from fw.lab import netns as labns
    from fw.lab.attachment import Openers
    from fw.lab.engine_glue import rules_path
    from fw.lab.lablock import lab_lock
    from fw.lab.rulestore import StoredRules
    from fw.lab.topology import default_topology, load_topology

    labns.check_lab_name(name)
    workers = default_workers(workers)
    topo = load_topology(topology) if topology else default_topology()
    rules_file = rules_path(topo, rules)
    stored = StoredRules(str(rules_file), check_rules(rules_file))
    refuse_unknown_interfaces(
        stored.ruleset, None if force else KnownInterfaces.of_topology(topo.firewall.interfaces))
    kernel = (kernel_lab.prepare(rules_file, stored.ruleset)
              if kernel_lab.check_engine(engine, fail_open) else None)
    with lab_lock(name, "up", timeout=LOCK_WAIT):
        if _already_up(name):
            return
        t0 = time.monotonic()
        handle = labns.up(topo, name)
        try:  # a lab is its namespaces plus an attach to its firewall (fw/lab/attachment.py)
            pid = attachment.start(name, handle.firewall_ns, handle.devices, stored=stored,
                                   kernel=kernel, fail_open=fail_open,
                                   conntrack_max=conntrack_max or topo.conntrack_max,
                                   backend=str(backend),
                                   openers=Openers(openers_maxlen, opener_limit),
                                   workers=workers)
        except BaseException as exc:
            detail = daemon_output_tail(name)
            labns.down(name)
            if isinstance(exc, LabError):
                raise LabError(f"{exc}{': ' + detail if detail else ''}; lab removed") from None
            raise
        _wait_links_up(handle)
    elapsed = time.monotonic() - t0
    _show_up(handle, rules_file, pid, fail_open, handle.up_seconds or 0.0, elapsed)


def _already_up(name: str) -> bool:
    """True (and said) when the lab runs; a half-built lab, or one whose daemon and supervisor
    are both gone, is removed so that `up` can build it anew."""
    from fw.commands import kernel_lab
    from fw.lab import control, supervisor
    from fw.lab import netns as labns

    if (state := labns.read_state(name)) is None and not labns.lab_namespaces(name):
        return False
    if state and state.get("attached") and not state.get("topology"):
        raise LabError(f"the name {name!r} is in use: attached to namespace "
                       f"{state['attached']['netns']} (`sudo fwlab list`); pick another --name")
    if (control.daemon_running(name) or kernel_lab.running(name, state or {})
            or supervisor.alive(supervisor.read_state(name), "supervisor")):
        stdout.print(
            f"lab {name!r} is already up; `sudo fwlab status --name {name}` shows it, "
            f"`sudo fwlab down --name {name}` removes it."
        )
        return True
    stderr.print(f"lab {name!r} is half built or its daemon is gone: removing it first")
    labns.down(name)
    return False


def check_rules(path: Path, nothing_done: str = "no lab built") -> Any:
    """The compiled rules; a lab whose rules would not load (or not within the deadline) is not
    built (nor an attachment made): the diagnostics, exit 2."""
    from fw.errors import RulesError
    from fw.lab.engine_glue import render_diagnostics
    from fw.lab.rulestore import compile_rules

    try:
        return compile_rules(path)
    except RulesError as exc:
        for text in render_diagnostics(exc):
            stderr.print(text, markup=False, highlight=False)
        raise LabError(f"{path}: the rules have errors; {nothing_done}") from None


def _wait_links_up(handle: Any, timeout: float = 3.0) -> None:
    """Wait until every link of the lab has carrier. A new veth drops what it is given until the
    kernel's link watch activates it (up to a second after `up`), so a user's first ping or SYN
    right after `fwlab up` would be lost. Bounded; a link still down is reported, not fatal."""
    from pyroute2 import IPRoute

    deadline = time.monotonic() + timeout
    pending = dict(handle.namespaces)
    while pending and time.monotonic() < deadline:
        for host, ns in list(pending.items()):
            with IPRoute(netns=ns, flags=0) as ipr:
                states = [
                    link.get_attr("IFLA_OPERSTATE")
                    for link in ipr.get_links()
                    if link.get_attr("IFLA_IFNAME") != "lo"
                ]
            if all(state == "UP" for state in states):
                del pending[host]
        if pending:
            time.sleep(0.05)
    if pending:
        stderr.print(f"warning: links of {', '.join(pending)} are not up yet")


def daemon_output_tail(name: str) -> str:
    """The daemon's last words (its one-line error) for an `up` that failed to start it."""
    from fw.lab.runtime import daemon_out_path

    try:
        lines = daemon_out_path(name).read_text(errors="replace").splitlines()
    except OSError:
        return ""
    lines = [line for line in lines if line.strip() and not line.startswith("{")]
    return lines[-1].strip() if lines else ""


def _try_next(topo: Any, name: str) -> list[str]:
    """Commands worth running next, with this topology's own hosts and addresses."""
    flag = "" if name == "default" else f" --name {name}"
    hosts = topo.hosts
    lines = []
    if "client" in hosts and "server" in hosts:
        srv = next(str(a.ip) for i in hosts["server"].interfaces.values() for a in i.addresses)
        lines += [
            f"sudo fwlab exec{flag} server -- python3 -m http.server 80 --bind {srv} &",
            f"sudo fwlab exec{flag} client -- curl -m 3 http://{srv}/",
        ]
        if "attacker" in hosts:
            cli = next(str(a.ip) for i in hosts["client"].interfaces.values() for a in i.addresses)
            lines.append(f"sudo fwlab exec{flag} attacker -- nmap -Pn -p 1-1024 {cli}")
    elif len(hosts) >= 2:
        (a, _), (_, b) = list(hosts.items())[:2]
        dst = next((str(x.ip) for i in b.interfaces.values() for x in i.addresses), None)
        if dst:
            lines.append(f"sudo fwlab exec{flag} {a} -- ping -c 3 {dst}")
    lines += [
        f"sudo fwlab status{flag}        rule hits, connections, queue drops",
        f"sudo fwlab logs{flag} -f       drops, rejects and log statements as they happen",
        f"sudo fwlab reload{flag} rules/stateless-web.fw",
        f"sudo fwlab down{flag}",
    ]
    return lines


def _show_up(
    handle: Any, rules_file: Path, pid: int | None, fail_open: bool, build: float, total: float
) -> None:
    out = stdout
    topo = handle.topology
    where = topo.source or "default topology"
    out.print(
        f"[bold green]lab {handle.name!r} is up[/] ({where}): built in {build:.2f} s, "
        f"engine ready in {total:.2f} s"
    )
    out.print(status.hosts_table(topo))
    failure = "fail open (--fail-open)" if fail_open else "fail closed"
    engine = f"engine daemon pid {pid}" if pid else "engine: the kernel's nftables"
    out.print(f"{engine} in {handle.firewall_ns}, rules {rules_file}"
              + (f", {failure}" if pid else ""), markup=False)
    out.print("\n[bold]Try:[/]")
    for line in _try_next(topo, handle.name):
        if pid or " logs" not in line:  # the kernel engine has no log of its own
            out.print(f"  {line}", markup=False, highlight=False)


def down(name: NameOpt = "default") -> None:
    """Remove a lab: its daemon, namespaces, links and runtime directory."""
    need_root("down")
    from fw.lab import attachment
    from fw.lab import netns as labns
    from fw.lab.lablock import lab_lock

    labns.check_lab_name(name)
    with lab_lock(name, "down", timeout=LOCK_WAIT):
        state = labns.read_state(name)
        if state is None and not labns.lab_namespaces(name):
            stdout.print(f"no lab {name!r}: nothing to do")
            return
        if state and state.get("attached") and not state.get("topology"):
            raise LabError(f"{name!r} is attached to namespace {state['attached']['netns']}, "
                           f"which fwlab did not build: `sudo fwlab detach --name {name}`")
        t0 = time.monotonic()
        attachment.stop(name)  # the engine, then the namespaces with everything in them
        labns.down(name)
        seconds = time.monotonic() - t0
    stdout.print(f"lab {name!r} removed in {seconds:.2f} s")


# -- exec / shell ------------------------------------------------------------------------------


def _host_ns(name: str, host: str) -> str:
    from fw.lab import netns as labns

    ns = labns.attach(name).ns(host)
    if not (labns.NETNS_DIR / ns).exists():
        raise LabError(f"lab {name!r}: namespace {ns} is missing; `sudo fwlab down --name {name}`")
    return ns


def exec_(
    host: Annotated[str, typer.Argument(help="Host of the lab (client, server, fw, ...).")],
    cmd: Annotated[list[str], typer.Argument(help="The command, after `--`.")],
    name: NameOpt = "default",
    detach: Annotated[bool, typer.Option(
        "--detach", "-d", help="Start it in the background; `fwlab down` ends it.")] = False,
) -> None:
    """Run a command in a host's namespace; its exit status is fwlab's."""
    need_root("exec")
    ns = _host_ns(name, host)
    if detach:
        _detach(name, host, cmd)
        return
    argv = ["ip", "netns", "exec", ns, *cmd]
    sys.stdout.flush()
    try:
        os.execvp(argv[0], argv)  # replaces fwlab: signals, tty and exit status are the command's
    except OSError as exc:
        raise LabError(f"cannot run ip netns exec: {exc.strerror}") from None


def _detach(name: str, host: str, cmd: list[str]) -> None:
    """Start a server or a load in the lab; its output goes to a file beside the engine log."""
    from fw.lab import netns as labns

    handle = labns.attach(name)
    log = labns.RUN_DIR / name / f"{host}-{Path(cmd[0]).name}.log"
    with open(log, "ab") as out:
        proc = handle.spawn(host, cmd, stdout=out, stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL)
    stdout.print(f"started pid {proc.pid} in {host}; output in {log}")


def shell(
    host: Annotated[str, typer.Argument(help="Host of the lab (client, server, fw, ...).")],
    name: NameOpt = "default",
) -> None:
    """An interactive shell in a host's namespace (exit it to come back)."""
    need_root("shell")
    ns = _host_ns(name, host)
    sh = os.environ.get("SHELL") or "/bin/bash"
    env = dict(os.environ, FWLAB_LAB=name, FWLAB_HOST=host, PS1=f"[fwlab {name}:{host}] \\w# ")
    argv = ["ip", "netns", "exec", ns, sh]
    if os.path.basename(sh) == "bash":
        argv += ["--norc", "-i"]  # a .bashrc would replace the prompt that says where you are
    sys.stdout.flush()
    os.execvpe(argv[0], argv, env)


# -- conntrack / nat / reload -------------------------------------------------------------------


def _entries(name: str, cmd: str) -> list[dict]:
    from fw.commands import kernel_lab
    from fw.lab import control
    from fw.lab.netns import read_state

    if kernel_lab.runs_kernel(read_state(name)):
        return kernel_lab.entries(name, cmd)

    answers = control.request_all(name, {"cmd": cmd})
    if len(answers) == 1:
        if not answers[0].get("ok"):
            raise LabError(f"lab {name!r}: {answers[0].get('error', 'the daemon refused')}")
        return answers[0]["entries"]
    rows = []  # several workers: every worker's rows, each saying whose it is
    for answer in answers:
        if not answer.get("ok"):
            stderr.print(f"fwlab: warning: worker {answer['worker']}: "
                         f"{answer.get('error', 'the daemon refused')}",
                         markup=False, highlight=False)
            continue
        rows += [{**row, "worker": answer["worker"]} for row in answer["entries"]]
    return rows


def conntrack(
    name: NameOpt = "default",
    as_json: JsonOpt = False,
    follow: Annotated[bool, typer.Option(
        "--follow", "-f", help="Print events as they happen (NEW, UPDATE, DESTROY), as "
        "`conntrack -E`; until Ctrl-C, --seconds or --count.")] = False,
    seconds: Annotated[float | None, typer.Option(help="With --follow: stop after this.")] = None,
    count: Annotated[int | None, typer.Option(help="With --follow: stop after N events.")] = None,
) -> None:
    """The engine's connection table, live (--follow: its events)."""
    need_root("conntrack")
    if follow:
        from fw.commands.ct_follow import follow_events

        follow_events(name, as_json, seconds, count)
        return
    columns = ["proto", "orig", "reply", "state", "expires_in", "packets", "bytes"]
    from fw.lab.control import worker_count

    if worker_count(name) > 1:
        columns.append("worker")
    _show_entries(name, "conntrack", as_json, columns, "no connections",
                  "{n} connection(s); packets and bytes are original/reply")


def nat(name: NameOpt = "default", as_json: JsonOpt = False) -> None:
    """The engine's NAT mappings, live: inside, outside, remotes, age, time left."""
    need_root("nat")
    _show_entries(name, "nat", as_json, None, "no NAT mappings", "{n} mapping(s)")


def _show_entries(name: str, what: str, as_json: bool, columns: list[str] | None, empty: str,
                  footer: str) -> None:
    rows = _entries(name, what)
    if as_json:
        print_json(rows)
    elif not rows:
        stdout.print(empty)
    else:
        stdout.print(rows_table(rows, columns))
        stdout.print(footer.format(n=len(rows)))
