"""`fwlab status`: the lab's hosts, its engine daemon and supervisor, rule hits, queue drops.

The daemon is in one of four states, and the exit status says whether it answered:

    running     it answered (exit 0)
    busy        its process is alive but it did not answer in time (exit 1)
    restarting  it is gone and its supervisor is starting it again (exit 1; packets are dropped)
    dead        neither it nor its supervisor runs (exit 1; packets are dropped)

`--json` prints the same facts (`daemon.state`) and exits the same way.
"""

from __future__ import annotations

import time
from typing import Any

import typer

from fw.commands.options import JsonOpt, NameOpt, need_root
from fw.commands.output import print_json, rules_table, stdout
from fw.errors import LabError

__all__ = ["ago", "hosts_table", "status"]

STATUS_TIMEOUT = 5.0


def status(name: NameOpt = "default", as_json: JsonOpt = False) -> None:
    """Hosts and addresses, the daemon, the rules with their hits, connections, queue drops."""
    need_root("status")
    from fw.lab import control, supervisor
    from fw.lab import netns as labns

    state = labns.read_state(name)
    if state is None:
        raise control.no_lab(name)
    handle = labns.attach(name)
    sup = supervisor.read_state(name)
    from fw.commands import kernel_lab

    kernel = kernel_lab.runs_kernel(state)
    daemon = kernel_lab.status_answer(name, state) if kernel else ask_daemon(name, sup)
    if as_json:
        print_json(_status_json(name, state, handle, daemon, sup))
    else:
        _show_status(name, state, handle, daemon, sup)
    if not daemon.get("ok"):
        raise typer.Exit(1)


def ask_daemon(name: str, sup: dict[str, Any] | None) -> dict[str, Any]:
    """The daemon's own status answer with a `state`, or why there is none; with several
    workers, their answers merged (merge_workers)."""
    from fw.lab import control

    count = control.worker_count(name)
    answers = [ask_worker(name, sup, w) for w in range(count)]
    return answers[0] if count == 1 else merge_workers(answers)


def ask_worker(name: str, sup: dict[str, Any] | None, worker: int = 0) -> dict[str, Any]:
    """One worker's status answer with a `state`, or why there is none."""
    from fw.lab import control

    try:
        answer = control.request(name, {"cmd": "status"}, timeout=STATUS_TIMEOUT, worker=worker)
    except control.DaemonBusy as exc:
        return {"ok": False, "state": "busy", "error": str(exc), "worker": worker}
    except LabError as exc:
        return {"ok": False, "state": _silent_state(sup, worker), "error": str(exc),
                "worker": worker}
    answer["state"] = "running" if answer.get("ok") else "busy"
    return answer


def merge_workers(answers: list[dict[str, Any]]) -> dict[str, Any]:
    """Several workers as one daemon: the first answering worker's answer, its engine counters
    (packets, rule hits, connections) summed over every worker that answered, `ok` and the
    state running only when all did; `workers` holds each worker's own answer."""
    up = [a for a in answers if a.get("ok")]
    if not up:
        return {**answers[0], "workers": answers}
    merged = dict(up[0])
    for other in up[1:]:
        merged["engine"] = _summed(merged["engine"], other["engine"])
    down = [a for a in answers if not a.get("ok")]
    merged.update(ok=not down, state=down[0]["state"] if down else "running", workers=answers)
    if down:
        merged["error"] = "; ".join(f"worker {a['worker']}: {a.get('error')}" for a in down)
    return merged


def _summed(a: Any, b: Any) -> Any:
    """Numbers added, dicts and equally long lists merged member by member, the rest kept."""
    if isinstance(a, dict) and isinstance(b, dict):
        return {k: _summed(a[k], b[k]) if k in b else a[k] for k in a} | \
            {k: v for k, v in b.items() if k not in a}
    if isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
        return [_summed(x, y) for x, y in zip(a, b, strict=True)]
    if isinstance(a, int | float) and isinstance(b, int | float) and not isinstance(a, bool):
        return a + b
    return a


def _silent_state(sup: dict[str, Any] | None, worker: int = 0) -> str:
    """Nobody listens on the control socket: busy (alive, the socket not there yet), restarting
    (the supervisor is at it) or dead."""
    from fw.lab.supervisor import alive

    mine = ((sup or {}).get("workers") or {}).get(str(worker)) if worker else None
    if alive({"daemon_pid": mine["pid"], "daemon_start": mine["start"]} if mine else sup,
             "daemon"):
        return "busy"
    return "restarting" if alive(sup, "supervisor") else "dead"


def _supervisor_json(sup: dict[str, Any] | None) -> dict[str, Any] | None:
    from fw.lab.supervisor import alive

    if sup is None:
        return None
    keys = ("supervisor_pid", "daemon_pid", "restarts", "last_exit", "last_restart",
            "last_worker", "workers")
    return {"running": alive(sup, "supervisor"), **{k: sup.get(k) for k in keys}}


def _status_json(
    name: str, state: dict[str, Any], handle: Any, daemon: dict, sup: dict | None
) -> dict:
    topo = handle.topology
    hosts = {host: {"namespace": handle.namespaces[host],
                    "interfaces": {i: [str(a) for a in f.addresses]
                                   for i, f in node.interfaces.items()}}
             for host, node in (topo.nodes().items() if topo else ())}
    return {
        "name": name,
        "status": state.get("status"),
        "created": state.get("created"),
        "topology_file": state.get("topology_file"),
        "attached": state.get("attached"),
        "up_seconds": state.get("up_seconds"),
        "firewall": handle.firewall_host,
        "hosts": hosts or {handle.firewall_host: {"namespace": handle.firewall_ns,
                                                  "interfaces": handle.devices}},
        "engine": daemon.get("engine", "fwlab"),
        "daemon": None if daemon.get("engine") == "kernel" else daemon,
        "kernel": daemon if daemon.get("engine") == "kernel" else None,
        "supervisor": _supervisor_json(sup),
    }


def ago(seconds: float) -> str:
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def hosts_table(topo: Any, title: str | None = None) -> Any:
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


def devices_table(handle: Any) -> Any:
    """An attachment's interfaces: the rule file's name, the namespace's device, its addresses
    (read from the namespace: fwlab did not give them)."""
    import json

    from rich.table import Table

    res = handle.run(handle.firewall_host, ["ip", "-j", "addr", "show"])
    links = json.loads(res.stdout or "[]") if res.returncode == 0 else []
    addrs = {link["ifname"]: ", ".join(f"{a['local']}/{a['prefixlen']}"
                                       for a in link.get("addr_info", [])
                                       if a.get("scope") == "global") for link in links}
    table = Table(show_edge=False, pad_edge=False)
    for col in ("interface", "device", "addresses"):
        table.add_column(col)
    for iface, dev in handle.devices.items():
        table.add_row(iface, dev, addrs.get(dev, "(gone)"))
    return table


def _show_status(name: str, state: dict, handle: Any, daemon: dict, sup: dict | None) -> None:
    out = stdout
    created = state.get("created") or time.time()
    if handle.topology is None:
        engine = (state.get("attached") or {}).get("engine") or state.get("engine") or "fwlab"
        out.print(f"[bold]attachment {name!r}[/]: {state.get('status')}, engine {engine}, "
                  f"attached {ago(time.time() - created)} ago to namespace "
                  f"{handle.firewall_ns}", markup=True, highlight=False)
        out.print(devices_table(handle))
    else:
        out.print(f"[bold]lab {name!r}[/]: {state.get('status')}, built "
                  f"{ago(time.time() - created)} ago from "
                  f"{state.get('topology_file') or 'the default topology'}")
        out.print(hosts_table(handle.topology))
    if daemon.get("engine") == "kernel":
        from fw.commands.kernel_lab import show_status

        return show_status(daemon)
    if not daemon.get("ok") and "engine" not in daemon:
        _show_silent(daemon, sup)
    else:
        _show_daemon(daemon)
        _show_workers(daemon.get("workers") or [], sup)
    _show_supervisor(sup)
    if "engine" in daemon:
        out.print(rules_table(daemon["engine"].get("chains", {})))
        d = daemon["daemon"]
        out.print(f"log: {d['log']} ({d['log_lines']} lines): `sudo fwlab logs -f`", markup=False)


def _show_silent(daemon: dict, sup: dict | None) -> None:
    st = daemon.get("state")
    error = daemon.get("error", "")
    if st == "busy":
        pid = (sup or {}).get("daemon_pid")
        alive = f"its process (pid {pid}) is alive but " if pid else ""
        stdout.print(f"[bold yellow]engine daemon: busy[/]: {alive}it did not answer: {error}")
    elif st == "restarting":
        stdout.print(
            f"[bold red]engine daemon: restarting[/]: its supervisor (pid "
            f"{(sup or {}).get('supervisor_pid')}) is starting it again; until then every packet "
            "is dropped (fail closed)"
        )
    else:
        stdout.print(f"[bold red]engine daemon: not running[/]: {error}")


def _show_daemon(daemon: dict) -> None:
    out = stdout
    eng = daemon["engine"]
    pk = eng["packets"]
    kq = daemon.get("kernel_queue") or {}
    d = daemon["daemon"]
    failure = "fail open" if daemon.get("fail_open") else "fail closed"
    out.print(
        f"engine daemon: pid {daemon['pid']}, up {ago(daemon['uptime'])}, "
        f"queue {daemon['queue']} ({daemon.get('backend', 'netfilterqueue')}, {failure})",
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
    oq = daemon.get("openers_queue")
    if oq:
        limited = daemon.get("openers_limited")
        out.print(
            f"openers queue (TCP SYN): {oq['queue_total']} waiting, {oq['queue_dropped']} "
            f"dropped (queue of {daemon.get('openers_maxlen')} full), "
            f"{limited if limited is not None else '?'} dropped by the per-source limit"
        )


def _show_workers(workers: list[dict], sup: dict | None) -> None:
    """With several workers: a line each (the lines above add them up)."""
    for w in workers:
        if not w.get("ok"):
            stdout.print(f"  worker {w['worker']}: ", end="")
            _show_silent(w, sup)
            continue
        eng, kq = w["engine"], w.get("kernel_queue") or {}
        stdout.print(
            f"  worker {w['worker']}: pid {w['pid']}, up {ago(w['uptime'])}, queue {w['queue']}, "
            f"{eng['packets']['packets']} packets, "
            f"{eng.get('conntrack', {}).get('entries', 0)} connections, "
            f"{kq.get('queue_dropped', '?')} dropped (queue full)", markup=False)


def _show_supervisor(sup: dict | None) -> None:
    from fw.lab.supervisor import alive

    if sup is None:
        return
    running = f"pid {sup.get('supervisor_pid')}" if alive(sup, "supervisor") else "not running"
    line = f"supervisor: {running}, restarts {sup.get('restarts', 0)}"
    if sup.get("last_restart"):
        who = f"worker {sup['last_worker']}: " if sup.get("last_worker") is not None else ""
        line += f" (last {ago(time.time() - sup['last_restart'])} ago: {who}{sup.get('last_exit')})"
    stdout.print(line, markup=False)
