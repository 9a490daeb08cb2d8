"""The lab commands: `fwlab up`, `down`, `status`, `exec`, `shell`, `conntrack`, `nat`, `reload`,
`logs` and the daemon entry `run`.

Registered on the main app by `register(app)`. Module level imports stay light (typer and the
error types): pyroute2, netfilterqueue and the engine are imported inside the commands that need
them, so `fwlab check` does not pay for them.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated, Any

import typer

from fw.commands.output import rows_table
from fw.errors import LabError

NameOpt = Annotated[
    str,
    typer.Option(
        "--name", help="Lab name: 1 to 20 lower-case letters and digits.", envvar="FWLAB_NAME"
    ),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
DAEMON_START_TIMEOUT = 15.0


def register(app: typer.Typer) -> None:
    """Add the lab commands to the `fwlab` app."""
    from fw.commands.logs import logs

    app.command("up")(up)
    app.command("down")(down)
    app.command("status")(status)
    app.command(
        "exec", context_settings={"allow_extra_args": True, "ignore_unknown_options": True}
    )(exec_)
    app.command("shell")(shell)
    app.command("conntrack")(conntrack)
    app.command("nat")(nat)
    app.command("reload")(reload)
    app.command("logs")(logs)  # fw/commands/logs.py
    app.command("run", hidden=True)(run)


def need_root(what: str) -> None:
    """Namespaces, iptables and the queue need root; say so in one line rather than fail later."""
    if os.geteuid() != 0:
        raise LabError(f"fwlab {what} needs root: run it with sudo")


def _state(name: str) -> dict[str, Any] | None:
    from fw.lab import netns as labns

    try:
        return json.loads((labns.RUN_DIR / labns.check_lab_name(name) / "lab.json").read_text())
    except (OSError, ValueError):
        return None


def _stdout():
    from fw.commands.output import stdout

    return stdout


def _stderr():
    from fw.commands.output import stderr

    return stderr


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
) -> None:
    """Build a lab of network namespaces and start the engine daemon in its firewall."""
    need_root("up")
    from fw.lab import control
    from fw.lab import netns as labns
    from fw.lab.engine_glue import rules_path
    from fw.lab.topology import default_topology, load_topology

    labns.check_lab_name(name)
    topo = load_topology(topology) if topology else default_topology()
    rules_file = rules_path(topo, rules)
    _check_rules(rules_file)
    if _state(name) is not None or labns.lab_namespaces(name):
        if control.daemon_running(name):
            _stdout().print(
                f"lab {name!r} is already up; `sudo fwlab status --name {name}` shows it, "
                f"`sudo fwlab down --name {name}` removes it."
            )
            return
        _stderr().print(f"lab {name!r} is half built or its daemon is gone: removing it first")
        labns.down(name)
    t0 = time.monotonic()
    handle = labns.up(topo, name)
    try:
        pid = _start_daemon(handle, rules_file, fail_open)
    except BaseException as exc:
        detail = _daemon_output_tail(name)
        labns.down(name)
        if isinstance(exc, LabError):
            raise LabError(f"{exc}{': ' + detail if detail else ''}; lab removed") from None
        raise
    _wait_links_up(handle)
    elapsed = time.monotonic() - t0
    _show_up(handle, rules_file, pid, fail_open, handle.up_seconds or 0.0, elapsed)


def _check_rules(path: Path) -> None:
    """Refuse to build a lab whose rules would not load: the diagnostics, exit 2."""
    from fw.errors import RulesError
    from fw.lab.engine_glue import load_rules, render_diagnostics

    try:
        load_rules(path)
    except RulesError as exc:
        for text in render_diagnostics(exc):
            _stderr().print(text, markup=False, highlight=False)
        raise LabError(f"{path}: the rules have errors; no lab built") from None


def _start_daemon(handle: Any, rules_file: Path, fail_open: bool) -> int:
    """Install the queue rules, spawn `fwlab run` in the firewall namespace, wait until bound."""
    from fw.lab import control
    from fw.lab.daemon import runtime_dir
    from fw.lab.nfqueue import install_queue

    try:
        install_queue(handle.firewall_ns, 0, fail_open)
    except RuntimeError as exc:
        raise LabError(f"installing the queue rules failed: {exc}") from None
    argv = [sys.executable, "-m", "fw", "run", "--name", handle.name, "--rules", str(rules_file)]
    if fail_open:
        argv.append("--fail-open")
    out = runtime_dir(handle.name) / "daemon.out"
    with out.open("ab") as f:
        proc = handle.spawn(
            handle.topology.firewall.host, argv, stdin=subprocess.DEVNULL, stdout=f, stderr=f
        )
    control.wait_ready(handle.name, proc.pid, timeout=DAEMON_START_TIMEOUT)
    return proc.pid


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
        _stderr().print(f"warning: links of {', '.join(pending)} are not up yet")


def _daemon_output_tail(name: str) -> str:
    """The daemon's last words (its one-line error) for an `up` that failed to start it."""
    from fw.lab.daemon import runtime_dir

    try:
        lines = (runtime_dir(name) / "daemon.out").read_text(errors="replace").splitlines()
    except OSError:
        return ""
    lines = [line for line in lines if line.strip() and not line.startswith("{")]
    return lines[-1].strip() if lines else ""


def _hosts_table(topo: Any, title: str | None = None) -> Any:
    from rich.table import Table

    table = Table(title=title, title_justify="left", show_edge=False, pad_edge=False)
    for col in ("host", "interface", "segment", "addresses"):
        table.add_column(col)
    for host, node in topo.nodes().items():
        label = f"{host} (firewall)" if host == topo.firewall.host else host
        for i, (ifname, iface) in enumerate(node.interfaces.items()):
            addrs = ", ".join(str(a) for a in iface.addresses)
            table.add_row(label if i == 0 else "", ifname, iface.segment, addrs)
    return table


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
    handle: Any, rules_file: Path, pid: int, fail_open: bool, build: float, total: float
) -> None:
    out = _stdout()
    topo = handle.topology
    where = topo.source or "default topology"
    out.print(
        f"[bold green]lab {handle.name!r} is up[/] ({where}): built in {build:.2f} s, "
        f"engine ready in {total:.2f} s"
    )
    out.print(_hosts_table(topo))
    failure = "fail open (--fail-open)" if fail_open else "fail closed"
    out.print(
        f"engine daemon pid {pid} in {handle.firewall_ns}, rules {rules_file}, {failure}",
        markup=False,
    )
    out.print("\n[bold]Try:[/]")
    for line in _try_next(topo, handle.name):
        out.print(f"  {line}", markup=False, highlight=False)


def down(name: NameOpt = "default") -> None:
    """Remove a lab: its daemon, namespaces, links and runtime directory."""
    need_root("down")
    from fw.lab import netns as labns

    labns.check_lab_name(name)
    if _state(name) is None and not labns.lab_namespaces(name):
        _stdout().print(f"no lab {name!r}: nothing to do")
        return
    seconds = labns.down(name)
    _stdout().print(f"lab {name!r} removed in {seconds:.2f} s")


# -- status -------------------------------------------------------------------------------------


def status(name: NameOpt = "default", as_json: JsonOpt = False) -> None:
    """Hosts and addresses, the daemon, the rules with their hits, connections, queue drops."""
    need_root("status")
    from fw.lab import control
    from fw.lab import netns as labns

    state = _state(name)
    if state is None:
        raise LabError(f"no lab {name!r} is up: start one with `sudo fwlab up --name {name}`")
    handle = labns.attach(name)
    try:
        daemon = control.request(name, {"cmd": "status"})
    except LabError as exc:
        daemon = {"ok": False, "error": str(exc)}
    if as_json:
        from fw.commands.output import print_json

        print_json(_status_json(name, state, handle, daemon))
        return
    _show_status(name, state, handle, daemon)
    if not daemon.get("ok"):
        raise typer.Exit(1)


def _status_json(name: str, state: dict[str, Any], handle: Any, daemon: dict) -> dict:
    topo = handle.topology
    return {
        "name": name,
        "status": state.get("status"),
        "created": state.get("created"),
        "topology_file": state.get("topology_file"),
        "up_seconds": state.get("up_seconds"),
        "firewall": topo.firewall.host,
        "hosts": {
            host: {
                "namespace": handle.namespaces[host],
                "interfaces": {
                    i: [str(a) for a in f.addresses] for i, f in node.interfaces.items()
                },
            }
            for host, node in topo.nodes().items()
        },
        "daemon": daemon,
    }


def _ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _show_status(name: str, state: dict, handle: Any, daemon: dict) -> None:
    out = _stdout()
    created = state.get("created") or time.time()
    out.print(
        f"[bold]lab {name!r}[/]: {state.get('status')}, built {_ago(time.time() - created)} ago"
        f" from {state.get('topology_file') or 'the default topology'}"
    )
    out.print(_hosts_table(handle.topology))
    if not daemon.get("ok"):
        out.print(f"[bold red]engine daemon: not running[/]: {daemon.get('error', '')}")
        return
    eng = daemon["engine"]
    pk = eng["packets"]
    kq = daemon.get("kernel_queue") or {}
    d = daemon["daemon"]
    failure = "fail open" if daemon.get("fail_open") else "fail closed"
    out.print(
        f"engine daemon: pid {daemon['pid']}, up {_ago(daemon['uptime'])}, "
        f"queue {daemon['queue']} ({failure})",
        markup=False,
    )
    out.print(f"rules: {daemon['rules']} ({daemon['mode']}), reloads {d['reloads']}", markup=False)
    out.print(
        f"packets: {pk['packets']} judged: {pk['accepted']} accepted, {pk['dropped']} dropped, "
        f"{pk['rejected']} rejected, {pk['malformed']} malformed; engine errors {d['crashes']}"
    )
    ct = eng.get("conntrack", {})
    out.print(f"conntrack: {ct.get('entries', 0)} entries (limit {ct.get('limit', '?')})")
    out.print(
        f"kernel queue: {kq.get('queue_total', '?')} waiting, "
        f"{kq.get('queue_dropped', '?')} dropped (queue full), "
        f"{kq.get('user_dropped', '?')} dropped (socket buffer full); "
        f"rcvbuf {daemon['adapter'].get('rcvbuf')} bytes"
    )
    out.print(_rules_table(eng))
    out.print(f"log: {d['log']} ({d['log_lines']} lines): `sudo fwlab logs -f`", markup=False)


def _rules_table(eng: dict) -> Any:
    from rich.table import Table

    table = Table(show_edge=False, pad_edge=False)
    for col, just in (("chain", "left"), ("line", "right"), ("rule", "left"),
                      ("hits", "right"), ("bytes", "right")):
        table.add_column(col, justify=just)  # type: ignore[arg-type]
    for chain, c in eng.get("chains", {}).items():
        for r in c.get("rules", []):
            table.add_row(chain, str(r.get("line") or ""), r.get("text") or "",
                          str(r["hits"]), str(r["bytes"]))
        table.add_row(chain, "", f"[italic]policy {c['policy']}[/]",
                      str(c["policy_hits"]), str(c["policy_bytes"]))
    return table


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
    _stdout().print(f"started pid {proc.pid} in {host}; output in {log}")


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
    from fw.lab import control

    answer = control.request(name, {"cmd": cmd})
    if not answer.get("ok"):
        raise LabError(f"lab {name!r}: {answer.get('error', 'the daemon refused')}")
    return answer["entries"]


def conntrack(name: NameOpt = "default", as_json: JsonOpt = False) -> None:
    """The engine's connection table, live."""
    need_root("conntrack")
    columns = ["proto", "orig", "reply", "state", "expires_in", "packets", "bytes"]
    _show_entries(name, "conntrack", as_json, columns, "no connections",
                  "{n} connection(s); packets and bytes are original/reply")


def nat(name: NameOpt = "default", as_json: JsonOpt = False) -> None:
    """The engine's NAT mappings, live: inside, outside, remotes, age, time left."""
    need_root("nat")
    _show_entries(name, "nat", as_json, None, "no NAT mappings", "{n} mapping(s)")


def _show_entries(name: str, what: str, as_json: bool, columns: list[str] | None, empty: str,
                  footer: str) -> None:
    from fw.commands.output import print_json

    rows = _entries(name, what)
    if as_json:
        print_json(rows)
    elif not rows:
        _stdout().print(empty)
    else:
        _stdout().print(rows_table(rows, columns))
        _stdout().print(footer.format(n=len(rows)))


def reload(
    rules: Annotated[str, typer.Argument(help="The rule file to run from now on.")],
    name: NameOpt = "default",
    as_json: JsonOpt = False,
) -> None:
    """Swap the running rules atomically; connections survive. A file with errors is refused."""
    need_root("reload")
    from fw.lab import control

    path = Path(rules).expanduser().resolve()
    if not path.is_file():
        raise LabError(f"rule file {rules} does not exist")
    answer = control.request(name, {"cmd": "reload", "rules": str(path)}, timeout=30)
    if as_json:
        from fw.commands.output import print_json

        print_json(answer)
        if not answer.get("ok"):
            raise typer.Exit(2)
        return
    if not answer.get("ok"):
        for text in answer.get("diagnostics", []):
            _stderr().print(text, markup=False, highlight=False)
        raise LabError(answer.get("error", "reload refused"))
    _stdout().print(f"lab {name!r} now runs {answer['rules']} ({answer['mode']})", markup=False)


# -- the daemon ---------------------------------------------------------------------------------


def run(
    name: NameOpt = "default",
    rules: Annotated[str | None, typer.Option("--rules", help="Rule file.")] = None,
    queue: Annotated[int, typer.Option("--queue", help="NFQUEUE number.")] = 0,
    fail_open: Annotated[bool, typer.Option("--fail-open", help="For status only.")] = False,
    conntrack_limit: Annotated[int, typer.Option("--conntrack-limit")] = 262_144,
) -> None:
    """The engine daemon of a lab (what `fwlab up` starts inside the firewall namespace)."""
    from fw.lab.daemon import run as run_daemon

    raise typer.Exit(
        run_daemon(
            name, rules, queue_num=queue, fail_open=fail_open, conntrack_limit=conntrack_limit
        )
    )
