"""scripts/bench_flood.py: a SYN flood against the lab while an iperf3 flow and curl run
(issue 15 item 1). `sudo scripts/bench_live.sh flood` runs it; so can

    sudo .venv/bin/python scripts/bench_flood.py [--seconds 20] [--modes openers,single] [--no-doc]

Each mode is a lab of its own (default topology, tests/lab/rules/soak.fw), built with
`fwlab up` and removed with `fwlab down` whatever happens:
    openers   the default: TCP openers in a queue of their own, 2,000/s per source
    nolimit   the openers queue without the per-source limit (`--opener-limit 0`)
    single    one queue for every packet, as before issue 15 (`--openers-maxlen 0`)
Per mode: the flood's rate (packets sent / seconds), the iperf3 flow's Mbit/s in each second of
the flood (slowest second; seconds under half the target), curl's success rate and latency, the
flood packets that reached `client`, the kernel's drop counters, the load average. The results
replace the "## Floods" section of docs/benchmarks.md (unless --no-doc).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from bench_doc import write_section  # noqa: E402

from fw.lab import flood  # noqa: E402

RULES = "tests/lab/rules/soak.fw"
MODES = {"openers": [], "nolimit": ["--opener-limit", "0"], "single": ["--openers-maxlen", "0"]}
LABELS = {"openers": "openers queue + 2,000/s per source (default)",
          "nolimit": "openers queue, no per-source limit", "single": "one queue (before)"}


def fwlab(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fw", *args], capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def one_mode(mode: str, seconds: float) -> dict:
    lab = f"flood{os.getpid() % 100000}"
    up = fwlab("up", "--name", lab, "--rules", RULES, *MODES[mode])
    if up.returncode != 0:
        raise SystemExit(f"fwlab up failed: {up.stderr.strip()[-300:]}")
    try:
        load_before = os.getloadavg()[0]
        with tempfile.TemporaryDirectory(prefix="fwlab-flood-") as tmp:
            result = flood.experiment(lab, flood_seconds=seconds, workdir=Path(tmp))
        status = json.loads(fwlab("status", "--name", lab, "--json").stdout or "{}")
        daemon = status.get("daemon") or {}
        return {"mode": mode, **flood.summary(result), "per_second": result["mbit_per_second"],
                "sender": result["sender"], "load_before": round(load_before, 2),
                "load_after": round(os.getloadavg()[0], 2),
                "limited": daemon.get("openers_limited") or 0,
                "kernel_queue": daemon.get("kernel_queue"),
                "openers_queue": daemon.get("openers_queue"),
                "judged": (daemon.get("engine") or {}).get("packets")}
    finally:
        fwlab("down", "--name", lab)


def doc_section(rows: list[dict], seconds: float) -> str:
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    lines = [
        "## Floods (issue 15)", "",
        f"`sudo scripts/bench_live.sh flood` ({when}; `scripts/bench_flood.py`, "
        f"`fw/lab/flood.py`): the default lab with `{RULES}`; an iperf3 TCP flow client -> "
        f"server at 20 Mbit/s; from its 3rd second a {seconds:g} s SYN flood from `attacker` "
        f"to `client` ({rows[0]['sender']} `--flood -S -p ++1`, as fast as it sends); curl of "
        "the server's page from `client` in a loop during the flood (5 s timeout each). One "
        "lab per mode. Goal: the flow never under 10 Mbit/s in any second of the flood, curl "
        ">= 95 %. Load average: before the mode / after it (2 CPUs; other sessions' work "
        "included).", "",
        "| mode | flood pkt/s | slowest second Mbit/s | seconds < 10 Mbit/s | curl ok | "
        "curl median / max s | limited by the kernel | openers queue dropped | main queue "
        "dropped | reached client | load |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        kq, oq = r["kernel_queue"] or {}, r["openers_queue"] or {}
        lines.append(
            f"| {LABELS[r['mode']]} | {r['flood_pps'] or 'n/a':,} | {r['min_mbit']} | "
            f"{r['seconds_below_half']} of {r['seconds']} | {r['curl_ok']}/{r['curl_tries']} | "
            f"{r['curl_median_s']} / {r['curl_max_s']} | {r['limited']:,} | "
            f"{oq.get('queue_dropped', 'n/a')} | {kq.get('queue_dropped', 'n/a')} | "
            f"{r['reached_inside']} | {r['load_before']} / {r['load_after']} |")
    lines += ["", "Per second of the flood, Mbit/s:", ""]
    lines += [f"- {LABELS[r['mode']]}: {', '.join(map(str, r['per_second']))}" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--modes", default="openers,single")
    ap.add_argument("--no-doc", action="store_true")
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_flood.py needs root: run it with sudo", file=sys.stderr)
        return 2
    rows = []
    for mode in args.modes.split(","):
        row = one_mode(mode, min(args.seconds, 120.0))
        print(json.dumps(row), flush=True)
        rows.append(row)
    section = doc_section(rows, args.seconds)
    print(section)
    if not args.no_doc:
        write_section('## Floods (issue 15)', section)
    return 0


if __name__ == "__main__":
    sys.exit(main())
