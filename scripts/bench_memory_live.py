"""scripts/bench_memory_live.py: the live engine daemon's memory per conntrack entry at the
table limit, and what it gives back when the entries expire (issue 15 item 2).

    sudo .venv/bin/python scripts/bench_memory_live.py [--max 50000] [--rounds 2] [--no-doc]

A lab of its own (default topology, tests/lab/rules/bench-stateful.fw, `--conntrack-max MAX`,
`--opener-limit 0`). `client` sends UDP datagrams to port 5201 of an address on the wan side that
nobody has (203.0.113.99), from every source port in turn (fw.lab.flood's raw-socket sender,
bounded by count and time): each is a new flow the rules accept, so the table fills to its
limit and stays there without replies. The daemon's resident memory (VmRSS, /proc/PID/status)
is read before, at the limit, and after the entries have expired (UDP unreplied: 30 s), for
`--rounds` fill/expire rounds. Per entry: (RSS at the limit - RSS before) / entries. The result
replaces the "## Live memory" section of docs/benchmarks.md (unless --no-doc).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

from bench_doc import write_section  # the scripts directory is on the path

ROOT = Path(__file__).resolve().parent.parent
RULES = "tests/lab/rules/bench-stateful.fw"
NOBODY = "203.0.113.99"
RATE = 5000  # new flows a second: below what the daemon judges on a loaded machine


def fwlab(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fw", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def status(lab: str) -> dict:
    return json.loads(fwlab("status", "--name", lab, "--json").stdout)["daemon"]


def rss_kb(pid: int) -> int:
    text = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", text).group(1))


def entries(lab: str) -> int:
    return status(lab)["engine"]["conntrack"]["entries"]


def fill(lab: str, limit: int, proto: str) -> float:
    """Send a new flow from every source port (limit + 20 %, at most 65,535) at a rate the
    daemon keeps up with; the seconds until the table is full (or the sender is done)."""
    t0 = time.monotonic()
    subprocess.run(["ip", "netns", "exec", f"fwl-{lab}-client", sys.executable, "-m",
                    "fw.lab.flood", "send", "--dst", NOBODY, "--proto", proto, "--port", "5201",
                    "--count", str(min(65535, limit * 6 // 5)), "--rate", str(RATE),
                    "--seconds", "30"], capture_output=True, timeout=60, cwd=ROOT, check=True)
    time.sleep(1)
    return time.monotonic() - t0


def wait_empty(lab: str, timeout: float = 150) -> float:
    t0 = time.monotonic()
    while entries(lab) > 0 and time.monotonic() - t0 < timeout:
        time.sleep(2)
    time.sleep(1)
    return time.monotonic() - t0


def measure(limit: int, rounds: int, proto: str, rules: str = RULES) -> dict:
    lab = f"mem{os.getpid() % 100000}"
    up = fwlab("up", "--name", lab, "--rules", rules, "--conntrack-max", str(limit),
               "--opener-limit", "0")
    if up.returncode != 0:
        raise SystemExit(f"fwlab up failed: {up.stderr.strip()[-300:]}")
    try:
        pid = int(status(lab)["pid"])
        time.sleep(2)
        samples = [{"when": "before", "rss_kb": rss_kb(pid), "entries": entries(lab),
                    "load": round(os.getloadavg()[0], 2)}]
        for n in range(1, rounds + 1):
            took = fill(lab, limit, proto)
            samples.append({"when": f"full ({n})", "rss_kb": rss_kb(pid), "entries": entries(lab),
                            "seconds": round(took, 1), "load": round(os.getloadavg()[0], 2)})
            took = wait_empty(lab)
            samples.append({"when": f"expired ({n})", "rss_kb": rss_kb(pid),
                            "entries": entries(lab), "seconds": round(took, 1),
                            "load": round(os.getloadavg()[0], 2)})
        daemon = status(lab)
        return {"limit": limit, "proto": proto, "rules": rules, "samples": samples, "pid": pid,
                "early_drops": daemon["engine"]["conntrack"].get("early_drops"),
                "memory": daemon.get("memory")}
    finally:
        fwlab("down", "--name", lab)


def per_entry(result: dict) -> float:
    """Bytes of resident memory per entry: (RSS at the first full table - before) / entries."""
    before, full = result["samples"][0], result["samples"][1]
    return (full["rss_kb"] - before["rss_kb"]) * 1024 / max(1, full["entries"])


def doc_section(results: list[dict]) -> str:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    limit = results[0]["limit"]
    lines = [
        "## Live memory (issue 15)", "",
        f"`sudo .venv/bin/python scripts/bench_memory_live.py --max {limit}` ({when}): the "
        f"engine daemon of a lab with `--conntrack-max {limit}`, its table filled with new "
        f"flows from `client` ({RATE:,}/s, one per source port, to port 5201 of an address "
        "nobody has, so none is answered: UDP entries expire after 30 s, TCP SYN_SENT after "
        "120 s), then left to expire; each protocol a lab of its own. Resident memory (VmRSS "
        "of /proc/PID/status); load average at each sample (2 CPUs, shared with other work).", "",
        "| protocol | sample | daemon RSS | conntrack entries | seconds | load |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for r in results:
        for x in r["samples"]:
            lines.append(f"| {r['proto']} | {x['when']} | {x['rss_kb']:,} kB | "
                         f"{x['entries']:,} | {x.get('seconds', '')} | {x['load']} |")
    figures = ", ".join(f"{r['proto']} **{per_entry(r):,.0f} B**" for r in results)
    lines += ["", f"Per entry at the limit (RSS growth / entries): {figures}; in process "
              "(`bench_engine.py memory`, tracemalloc, the table alone): 323 B (UDP), 479 B "
              "(TCP, after handshake and data).", ""]
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--max", type=int, default=50_000)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--protos", default="udp,tcp")
    ap.add_argument("--rules", default=RULES, help="e.g. tests/lab/rules/bench-masq.fw (NAT)")
    ap.add_argument("--no-doc", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_memory_live.py needs root: run it with sudo", file=sys.stderr)
        return 2
    results = []
    for proto in args.protos.split(","):
        results.append(measure(min(args.max, 65_000), max(1, min(args.rounds, 5)), proto,
                               args.rules))
        print(json.dumps(results[-1]), flush=True)
    section = doc_section(results)
    print(section)
    if not args.no_doc:
        write_section('## Live memory (issue 15)', section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
