"""The scripts a user runs to reproduce the documented figures must at least start: a script
that imports a helper nobody committed fails only on the day someone re-measures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parent.parent / "scripts"
WITH_HELP = sorted(
    path for path in SCRIPTS.iterdir()
    if path.name not in {"bench_doc.py", "soak_sample.py", "setup", "demo"}
    and (path.suffix == ".py" or path.read_text().startswith("#!/usr/bin/env python")))


def run(path: Path, *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, str(path), *args], input=stdin, text=True,
                          capture_output=True, timeout=120)


@pytest.mark.parametrize("path", WITH_HELP, ids=lambda path: path.name)
def test_every_benchmark_script_starts_and_answers_help(path: Path) -> None:
    result = run(path, "--help")
    assert result.returncode == 0, result.stderr


def test_the_soak_sampler_prints_one_line_from_a_status() -> None:
    status = {"daemon": {"pid": None, "engine": {"packets": {"packets": 7, "malformed": 0},
                                                 "conntrack": {"entries": 3}}}}
    result = run(SCRIPTS / "soak_sample.py", "30", "0", stdin=json.dumps(status))
    assert result.returncode == 0, result.stderr
    assert "conntrack 3  packets 7" in result.stdout


SHELL_SCRIPTS = sorted(path for path in SCRIPTS.iterdir()
                       if path.read_text().startswith("#!/usr/bin/env bash"))


@pytest.mark.parametrize("path", SHELL_SCRIPTS, ids=lambda path: path.name)
def test_every_shell_script_parses(path: Path) -> None:
    result = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_a_benchmark_section_is_replaced_in_place_or_added_after_its_neighbour(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    sys.path.insert(0, str(SCRIPTS))
    import bench_doc

    doc = tmp_path / "benchmarks.md"
    doc.write_text("# Benchmarks\n\n## Live lab\n\nold\n\n## Floods\n\nf\n")
    monkeypatch.setattr(bench_doc, "DOC", doc)
    bench_doc.write_section("## Live lab: several workers", "## Live lab: several workers\n\nw\n",
                            after="## Live lab")
    bench_doc.write_section("## Live lab", "## Live lab\n\nnew\n")
    bench_doc.write_section("## Soak", "## Soak\n\ns\n", after="## Nowhere")
    assert doc.read_text() == ("# Benchmarks\n\n## Live lab\n\nnew\n\n## Live lab: several "
                               "workers\n\nw\n\n## Floods\n\nf\n\n## Soak\n\ns\n")
