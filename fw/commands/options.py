"""The options and arguments several commands share, so each is spelled and explained once.

A new command takes its `--name`, `--json`, ... from here:

    def trace(name: NameOpt = "default", as_json: JsonOpt = False) -> None:
        need_root("trace")

This module imports only typer and the error types: every command module may import it, and it
imports no command module (so no import circle can run through it).
"""

from __future__ import annotations

import os
from enum import StrEnum
from typing import Annotated

import typer

from fw.errors import LabError

__all__ = [
    "OPENERS_MAXLEN", "OPENER_LIMIT", "Backend", "BackendOpt", "ConntrackMaxOpt", "EngineOpt",
    "IfaceOpt", "JsonOpt", "NameOpt", "OpenerLimitOpt", "OpenersMaxlenOpt", "RulesArg",
    "TopologyOpt", "WorkersOpt", "default_workers", "need_root",
]

JsonOpt = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
NameOpt = Annotated[
    str,
    typer.Option(
        "--name", help="Lab name: 1 to 20 lower-case letters and digits.", envvar="FWLAB_NAME"
    ),
]
RulesArg = Annotated[str, typer.Argument(help="Rule file (.fw).")]
TopologyOpt = Annotated[
    str | None, typer.Option(help="Topology file (default: the default lab).")
]
IfaceOpt = Annotated[str | None, typer.Option(help="Interface (default: by route lookup).")]
ConntrackMaxOpt = Annotated[
    int | None,
    typer.Option("--conntrack-max", min=1, max=1 << 24,
                 help="Entries the engine's connection table holds (default: the topology's "
                 "`conntrack_max`, else 262144)."),
]

OPENERS_MAXLEN = 1024  # TCP openers waiting in their own queue (docs/lab.md, "Floods")
OPENER_LIMIT = 2000  # TCP openers a second from one source before the kernel drops them

OpenersMaxlenOpt = Annotated[
    int,
    typer.Option("--openers-maxlen", min=0, max=1 << 20,
                 help="TCP connection openers (SYN without ACK) wait in a queue of their own, "
                 "served after the established packets, and the kernel drops an opener when "
                 "this many wait (0: one queue for every packet)."),
]
OpenerLimitOpt = Annotated[
    int,
    typer.Option("--opener-limit", min=0, max=1_000_000,
                 help="TCP openers a second one source may send before the kernel drops them "
                 "unjudged (0: no limit; needs the openers queue)."),
]

WorkersOpt = Annotated[
    int | None,
    typer.Option("--workers", min=1, max=16, envvar="FWLAB_WORKERS",
                 help="Engine processes, each with its own queues and its share of the flows "
                 "(1, 2, 4, 8 or 16; default 1)."),
]


def default_workers(workers: int | None) -> int:
    """--workers as given, else 1 (docs/lab.md, "Several workers", says why not the CPUs)."""
    from fw.lab.steering import check_workers

    return check_workers(workers if workers is not None else 1)


EngineOpt = Annotated[
    str,
    typer.Option("--engine", help="fwlab: the engine daemon judges every packet (NFQUEUE); "
                 "kernel: the firewall runs the exported rules in its own nftables."),
]
ForceOpt = Annotated[
    bool,
    typer.Option("--force", help="Run a rule file that names interfaces the lab's firewall "
                 "does not have (those rules never match)."),
]


class Backend(StrEnum):
    """The kernel queue backends (fw.lab.nfqueue.BACKENDS)."""

    netlink = "netlink"
    netfilterqueue = "netfilterqueue"


BackendOpt = Annotated[
    Backend,
    typer.Option("--backend", envvar="FWLAB_BACKEND",
                 help="How the engine daemon talks to the kernel's queue: netlink (GSO packets, "
                 "batched verdicts: fast) or netfilterqueue (libnetfilter_queue)."),
]


def need_root(what: str) -> None:
    """Namespaces, iptables and the queue need root; say so in one line rather than fail later."""
    if os.geteuid() != 0:
        raise LabError(f"fwlab {what} needs root: run it with sudo")
