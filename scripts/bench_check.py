#!/usr/bin/env python3
"""How long `fwlab check` takes as rule files grow, the exact unreachable-rule analysis and the
topology check included (issue 11: under 10 s for 10,000 rules).

Usage: .venv/bin/python scripts/bench_check.py [--sizes 1000 10000] [--repeat 3]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_parse import generated_rules

from fw.commands.check import file_diagnostics
from fw.lab.topology import default_topology


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    lab = default_topology()
    with tempfile.TemporaryDirectory() as tmp:
        for size in args.sizes:
            path = Path(tmp) / f"rules-{size}.fw"
            path.write_text(generated_rules(size))
            best, found = float("inf"), 0
            for _ in range(args.repeat):
                start = time.process_time()
                found = len(file_diagnostics(str(path), lab, exact=True))
                best = min(best, time.process_time() - start)
            print(f"{size:>6} rules: {best:.3f} s CPU, {found} diagnostics")


if __name__ == "__main__":
    main()
