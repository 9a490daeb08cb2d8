"""fwlab in front of a network namespace: what `fwlab attach` adds to it, and what `detach` takes
away again, exactly. `fwlab up` is a lab's namespaces plus `start` on its firewall namespace;
`down` is `stop` plus deleting the namespaces.

What `start` adds to the namespace, nothing else:
- sysctls the engine needs (SYSCTLS: forwarding, accept_local for NAT in prerouting, no
  redirects, no reverse-path filter on the mapped devices; the kernel engine's per-flow
  counters). Each one's previous value is recorded first, with the values the kernel changes
  along with it (writing ip_forward sets every device's `forwarding`), so `stop` puts back
  exactly what was there;
- the engine daemon (fwlab): the NFQUEUE rules (fw/lab/nfqueue.py; iptables-nft makes the
  tables `ip raw` and `ip6 raw` when they are not there) and the supervisor with its daemon,
  recorded as the lab's processes; or the kernel engine: the tables `inet fwlab` and
  `ip fwlab_nat` (fw/lab/kernel_engine.py).

All of it is recorded in the state file's `attached` part before it is done, so a `stop` after
a failure half-way removes what was done and only that:

    netns    the namespace          ifaces   rule file's name -> device (fw/lab/ifmap.py)
    engine   fwlab | kernel          sysctls  path under /proc/sys -> value before
    tables   nft tables the namespace had before
    queue    the queue rules' layout (nfqueue.QueueLayout: fail_open, openers, workers...)
"""

from __future__ import annotations

import contextlib
import subprocess
from typing import Any, NamedTuple

from fw.errors import LabError
from fw.lab import ifmap, kernel_engine
from fw.lab import netns as labns

__all__ = ["OUR_TABLES", "Openers", "attached_to", "check_namespace", "start", "stop",
           "sysctls_for"]

SYSCTLS = {  # path under /proc/sys -> value, in the order they are written
    "net/ipv4/ip_forward": "1",
    "net/ipv6/conf/all/forwarding": "1",
    # The engine source-translates in prerouting (docs/design.md): a masqueraded packet enters
    # routing with the firewall's own address as its source, a martian without accept_local
    # (docs/lab-notes.md). `all` is OR-ed with each device's value.
    "net/ipv4/conf/all/accept_local": "1",
    "net/ipv4/conf/all/send_redirects": "0",
    "net/ipv4/conf/all/rp_filter": "0",
}
DEVICE_SYSCTLS = {"rp_filter": "0", "send_redirects": "0"}  # per mapped device (max/OR with all)
KERNEL_SYSCTLS = {"net/netfilter/nf_conntrack_acct": "1"}  # per-flow packets/bytes for `conntrack`
# what the kernel changes along with the writes above (kept and put back too)
ALONG = ("net/ipv4/conf/*/forwarding", "net/ipv4/conf/all/accept_redirects",
         "net/ipv6/conf/*/forwarding")
OUR_TABLES = ("ip raw", "ip6 raw", f"inet {kernel_engine.TABLE}", "ip fwlab_nat",
              "inet fwlab_steer")  # the last: fw/lab/steering.py
QUEUE = 0


class Openers(NamedTuple):
    """The openers queue of the engine daemon (docs/lab.md, "Floods"): how many may wait (0:
    none, every packet in QUEUE), the per-source limit a second."""

    maxlen: int = 0
    limit: int = 0

    def layout(self, fail_open: bool, workers: int = 1) -> Any:
        """The queues of a daemon with `workers` workers: worker W's main queue is W, its
        openers queue workers + W."""
        from fw.lab.nfqueue import QueueLayout

        if not self.maxlen:
            return QueueLayout(QUEUE, fail_open, workers=workers)
        return QueueLayout(QUEUE, fail_open, openers=QUEUE + workers,
                           opener_limit=self.limit or None, workers=workers)


# -- checks -------------------------------------------------------------------------------------


def check_namespace(ns: str, mapping: dict[str, str]) -> dict[str, int]:
    """The namespace's devices; a one-line error when the namespace or a mapped device is not
    there, or when fwlab already runs in front of it."""
    if "/" in ns or ns in ("", ".", "..") or not (labns.NETNS_DIR / ns).exists():
        known = sorted(p.name for p in labns.NETNS_DIR.iterdir()) if labns.NETNS_DIR.is_dir() \
            else []
        raise LabError(f"no network namespace {ns!r} (`ip netns list`: "
                       f"{', '.join(known) or 'none'})")
    devices = ifmap.namespace_devices(ns)
    for name, dev in mapping.items():
        if dev not in devices:
            have = ", ".join(d for d in devices if d != "lo")
            raise LabError(f"--iface {name}={dev}: namespace {ns} has no device {dev} "
                           f"(it has {have or 'only lo'})")
    if (other := attached_to(ns)) is not None:
        raise LabError(f"fwlab already runs in front of {ns} as {other!r}; "
                       f"`sudo fwlab detach --name {other}` first")
    return devices


def attached_to(ns: str) -> str | None:
    """The lab or attachment whose engine runs in namespace `ns`, if any."""
    for name in labns.list_labs():
        state = labns.read_state(name) or {}
        if (state.get("attached") or {}).get("netns") == ns:
            return name
    return None


# -- start --------------------------------------------------------------------------------------


def start(name: str, ns: str, mapping: dict[str, str], *, stored: Any, kernel: Any,
          fail_open: bool, conntrack_max: int, backend: str,
          openers: Openers = Openers(), workers: int = 1) -> int | None:
    """Run the engine (or, with `kernel` prepared, the kernel's rules) in front of `ns`: record,
    then change. On any failure what was done is undone and the error raised. Returns the
    daemon's pid (None for the kernel engine)."""
    engine = kernel_engine.KERNEL if kernel is not None else kernel_engine.FWLAB
    tables = list_tables(ns)
    if kernel is not None and f"inet {kernel_engine.TABLE}" in tables:
        raise LabError(f"{ns} has an nft table inet {kernel_engine.TABLE} already: "
                       "fwlab's kernel engine would replace it")
    wanted = sysctls_for(mapping, kernel is not None)
    labns.update_state(name, engine=engine, attached={
        "netns": ns, "ifaces": mapping, "engine": engine, "tables": sorted(tables),
        "sysctls": read_sysctls(ns, [*wanted, *ALONG]), "queue": None})
    try:
        write_sysctls(ns, wanted)
        return _start_engine(name, ns, stored, kernel, fail_open, conntrack_max, backend,
                             openers, workers)
    except BaseException:
        with contextlib.suppress(Exception):
            stop(name)
        raise


def _start_engine(name: str, ns: str, stored: Any, kernel: Any, fail_open: bool,
                  conntrack_max: int, backend: str, openers: Openers,
                  workers: int) -> int | None:
    from dataclasses import asdict

    from fw.lab import rulestore, steering
    from fw.lab.nfqueue import install_queue
    from fw.lab.supervisor import spawn_supervisor

    handle = labns.attach(name)
    if kernel is not None:
        try:
            kernel_engine.start(handle, kernel)
        except LabError as exc:
            raise LabError(f"loading the rules into the kernel failed: {exc}") from None
        return None
    state = labns.read_state(name) or {}
    layout = openers.layout(fail_open, workers)
    labns.update_state(name, attached={**state["attached"], "queue": asdict(layout)})
    try:
        install_queue(ns, layout,
                      steering.script(workers, stored.ruleset) if workers > 1 else None)
    except RuntimeError as exc:
        raise LabError(f"installing the queue rules failed: {exc}") from None
    rulestore.store(name, stored)
    return spawn_supervisor(handle, fail_open=fail_open, conntrack_max=conntrack_max,
                            backend=backend, openers_maxlen=openers.maxlen, workers=workers)


def sysctls_for(mapping: dict[str, str], kernel: bool) -> dict[str, str]:
    """What the engine needs set in the namespace: path under /proc/sys -> value."""
    wanted = dict(SYSCTLS)
    for dev in mapping.values():
        wanted.update({f"net/ipv4/conf/{dev}/{key}": v for key, v in DEVICE_SYSCTLS.items()})
    return {**wanted, **(KERNEL_SYSCTLS if kernel else {})}


# -- stop ---------------------------------------------------------------------------------------


def stop(name: str) -> list[str]:
    """Undo `start` for lab or attachment `name`: end its processes, remove its rules and the
    tables it made, put its sysctls back. Leaves the state file (the caller removes it).
    Returns what it did, one phrase each, for the command to report."""
    state = labns.read_state(name) or {}
    attached = state.get("attached")
    if not attached:
        return []
    ns, done = attached["netns"], []
    processes = [p for p in state.get("processes", []) if p.get("pid")]
    labns.end_processes(state)
    done.append(f"{len(processes)} process(es) ended")
    if not (labns.NETNS_DIR / ns).exists():
        return [*done, f"namespace {ns} is gone: nothing else to undo"]
    if attached.get("queue") is not None:
        from fw.lab.nfqueue import QueueLayout, remove_queue

        remove_queue(ns, QueueLayout.of(attached["queue"]))
        done.append("queue rules removed")
    dropped = drop_tables(ns, set(attached.get("tables") or []))
    if dropped:
        done.append(f"nft table(s) {', '.join(dropped)} removed")
    restored = restore_sysctls(ns, attached.get("sysctls") or {})
    done.append(f"{restored} sysctl(s) restored")
    return done


def drop_tables(ns: str, before: set[str]) -> list[str]:
    """Delete the tables of ours that were not there before: the kernel engine's always, a raw
    table iptables-nft made only when no rule is left in it (someone else's since)."""
    dropped = []
    for table in OUR_TABLES:
        if table in before or table not in list_tables(ns):
            continue
        if table.endswith(" raw") and _has_rules(ns, table):
            continue
        kernel_engine.nft(ns, ["delete", "table", *table.split()])
        dropped.append(table)
    return dropped


def _has_rules(ns: str, table: str) -> bool:
    listed = kernel_engine.nft(ns, ["-j", "list", "table", *table.split()])
    return '"rule"' in listed


def list_tables(ns: str) -> set[str]:
    """`family name` of every nft table in the namespace."""
    out = kernel_engine.nft(ns, ["list", "tables"])
    return {line.split(None, 1)[1].strip() for line in out.splitlines()
            if line.startswith("table ")}


# -- sysctls ------------------------------------------------------------------------------------


def _sh(ns: str, script: str, *args: str) -> str:
    res = subprocess.run(["ip", "netns", "exec", ns, "sh", "-c", script, "sh", *args],
                         capture_output=True, text=True, timeout=10, check=False)
    if res.returncode != 0:
        raise LabError(f"sysctls in {ns}: {res.stderr.strip() or 'failed'}")
    return res.stdout


def read_sysctls(ns: str, patterns: list[str]) -> dict[str, str]:
    """Current values of the paths (globs allowed) under /proc/sys that exist."""
    script = ('cd /proc/sys && for f in $*; do [ -f "$f" ] && '
              'printf "%s\\t%s\\n" "$f" "$(cat "$f")"; done; true')
    out = _sh(ns, script, *patterns)
    return dict(line.split("\t", 1) for line in out.splitlines() if "\t" in line)


def write_sysctls(ns: str, values: dict[str, str]) -> None:
    """Write path=value pairs in order; a path the kernel lacks is skipped."""
    script = ('cd /proc/sys && while [ $# -gt 1 ]; do [ ! -f "$1" ] || echo "$2" > "$1" || '
              'exit 1; shift 2; done')
    _sh(ns, script, *[x for kv in values.items() for x in kv])


def restore_sysctls(ns: str, before: dict[str, str]) -> int:
    """Put back the recorded values: the global switches first (they reset the per-device
    values the kernel changed with them), then whatever still differs. Returns how many."""
    written: set[str] = set()
    for _ in range(3):
        now = read_sysctls(ns, list(before))
        differ = {k: v for k, v in before.items() if now.get(k, v) != v}
        if not differ:
            break
        todo = {k: v for k, v in differ.items() if k in SYSCTLS} or differ
        write_sysctls(ns, todo)
        written.update(todo)
    return len(written)
