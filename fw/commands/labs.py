"""`fwlab list`: every lab that is up, at a glance (as `containerlab inspect --all`, `ip netns`)."""

from __future__ import annotations

import time
from typing import Any

from fw.commands.options import JsonOpt, need_root


def list_(as_json: JsonOpt = False) -> None:
    """Every lab and attachment that is up: name, topology (an attachment: its namespace and
    interface mapping), rules, engine, daemon health, uptime."""
    need_root("list")
    from fw.commands.output import print_json, rows_table, stdout
    from fw.lab import netns as labns

    rows = [lab_row(name) for name in labns.list_labs()]
    if as_json:
        print_json(rows)
    elif not rows:
        stdout.print("no lab is up: `sudo fwlab up` starts the default one")
    else:
        columns = ["name", "topology", "rules", "engine", "daemon", "uptime"]
        stdout.print(rows_table([human(row) for row in rows], columns))


def lab_row(name: str) -> dict[str, Any]:
    """What the state file says about one lab, and what its engine answers (as `status` asks)."""
    from fw.commands import kernel_lab
    from fw.commands.status import ask_daemon
    from fw.lab import netns as labns
    from fw.lab import supervisor

    state = labns.read_state(name) or {}
    kernel = kernel_lab.runs_kernel(state)
    answer = (kernel_lab.status_answer(name, state) if kernel
              else ask_daemon(name, supervisor.read_state(name)))
    created = state.get("created")
    attached = state.get("attached") or {}
    return {
        "name": name,
        "kind": "lab" if state.get("topology") else "attachment",
        "status": state.get("status", "half built (no state file)"),
        "topology": (state.get("topology_file") or ("default" if state.get("topology") else None)
                     or _attached(state)),
        "rules": answer.get("rules"),
        "mode": answer.get("mode"),
        "engine": "kernel" if kernel else "fwlab",
        "daemon": health(answer, kernel),
        "uptime": round(time.time() - created, 1) if created else None,
        "namespaces": labns.lab_namespaces(name),  # the ones it made (an attachment: none)
        "netns": attached.get("netns"),  # where its engine runs
        "ifaces": attached.get("ifaces"),  # the rules' interface names -> devices
    }


def _attached(state: dict[str, Any]) -> str | None:
    """What an attachment stands in front of, in the topology column: `netns NAME`."""
    netns = (state.get("attached") or {}).get("netns")
    return f"netns {netns}" if netns and not state.get("topology") else None


def health(answer: dict[str, Any], kernel: bool) -> dict[str, Any]:
    """Is the engine there: the daemon's pid and packets, or the kernel's rules loaded."""
    if not answer.get("ok"):
        return {"running": False, "state": answer.get("state"), "error": answer.get("error")}
    if kernel:
        return {"running": True, "state": "nftables", "namespace": answer.get("namespace")}
    return {"running": True, "state": answer.get("state", "running"), "pid": answer.get("pid"),
            "uptime": answer.get("uptime"),
            "packets": answer.get("engine", {}).get("packets", {}).get("packets"),
            "engine_errors": answer.get("daemon", {}).get("crashes")}


def human(row: dict[str, Any]) -> dict[str, str]:
    """The row as table cells: short health, rules with their mode, uptime in words."""
    from fw.commands.status import ago

    d = row["daemon"]
    if not d["running"]:
        health_text = f"NOT RUNNING ({d.get('state') or 'dead'}: fail closed, every packet dropped)"
    elif row["engine"] == "kernel":
        health_text = f"nftables in {d['namespace']}"
    else:
        health_text = f"running, pid {d['pid']}, {d['packets']} packets"
    rules = f"{row['rules']} ({row['mode']})" if row["rules"] else "-"
    uptime = ago(row["uptime"]) if row["uptime"] is not None else "-"
    status = "" if row["status"] == "up" else f" [{row['status']}]"
    where = row["topology"] or "-"
    if row.get("kind") == "attachment" and row.get("ifaces"):
        where += f" ({', '.join(f'{n}={d}' for n, d in row['ifaces'].items())})"
    return {"name": row["name"] + status, "topology": where, "rules": rules,
            "engine": row["engine"], "daemon": health_text, "uptime": uptime}
