"""One line of scripts/soak.sh: `fwlab status --json` on stdin; elapsed seconds and the count of
failed client commands as arguments."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def rss_kb(pid: int | None) -> str:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except (OSError, TypeError):
        return "?"
    return next((line.split()[1] for line in status.splitlines()
                 if line.startswith("VmRSS")), "?")


def main() -> None:
    status = json.load(sys.stdin)
    daemon = status.get("daemon") or {}
    engine = daemon.get("engine") or {}
    packets = engine.get("packets") or {}
    restarts = (status.get("supervisor") or {}).get("restarts") or 0
    print(f"{sys.argv[1]:>6}s  rss {rss_kb(daemon.get('pid'))} kB  "
          f"conntrack {(engine.get('conntrack') or {}).get('entries')}  "
          f"packets {packets.get('packets')}  malformed {packets.get('malformed')}  "
          f"restarts {restarts}  failed {sys.argv[2]}", flush=True)


if __name__ == "__main__":
    main()
