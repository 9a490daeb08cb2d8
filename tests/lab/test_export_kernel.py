"""The kernel takes every exported script: `nft -c -f` checks it, `nft -f` loads it twice (the
second load replaces the tables: the atomic reload), in a throwaway namespace of its own.

The same namespace keeps the stored JSON honest: tests/golden/export/*.json and
tests/golden/import/*.json are what `nft -j list ruleset` says after loading the .nft beside
them (handles left out), so the import and round-trip tests can run without root. And nft text
is imported as its JSON is, with unsupported rules reported at their line."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from fw.commands.check import file_diagnostics
from fw.dsl import load_ruleset
from fw.errors import FwlabError
from fw.export.nft import to_nft
from fw.export.nft_import import import_nft
from tests.golden import compare
from tests.nft_json import listing_text
from tests.test_export import TWO_PROTOCOLS

ROOT = Path(__file__).resolve().parents[2]


def checked(path: Path) -> bool:
    """Does `fwlab check` accept the file (no error), and does export not refuse it outright
    (what `--approximate` cannot write either, as a too-long interface name)?"""
    if any(d.severity == "error" for d in file_diagnostics(str(path))):
        return False
    try:
        to_nft(load_ruleset(str(path)), approximate=True)
    except FwlabError:
        return False
    return True


# Every rule file of the project that `check` accepts: the examples and all of tests/.
SCRIPTS = [p for p in sorted({*ROOT.glob("rules/**/*.fw"), *ROOT.glob("tests/**/*.fw")})
           if checked(p)]
GOLDEN_NFT = [*sorted((ROOT / "tests/golden/export").glob("*.nft")),
              *sorted((ROOT / "tests/golden/export-extra").glob("*.nft")),
              *sorted((ROOT / "tests/golden/import").glob("*.nft"))]

pytestmark = [pytest.mark.lab,
              pytest.mark.skipif(shutil.which("nft") is None, reason="needs nft")]


@pytest.fixture(scope="module")
def netns() -> Iterator[str]:
    name = f"fwx{os.getpid()}k"
    subprocess.run(["ip", "netns", "add", name], check=True, timeout=10)
    try:
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=True, timeout=10)


def nft(netns: str, *args: str, script: str = "") -> subprocess.CompletedProcess:
    return subprocess.run(["ip", "netns", "exec", netns, "nft", *args], input=script,
                          capture_output=True, text=True, timeout=20)


@pytest.mark.parametrize("path", SCRIPTS, ids=lambda p: p.relative_to(ROOT).as_posix())
def test_exported_script_loads_and_reloads(path: Path, netns: str) -> None:
    text = to_nft(load_ruleset(str(path)), approximate=True).text
    checked = nft(netns, "-c", "-f", "-", script=text)
    assert checked.returncode == 0, checked.stderr
    for _ in range(2):
        loaded = nft(netns, "-f", "-", script=text)
        assert loaded.returncode == 0, loaded.stderr
    listed = nft(netns, "list", "table", "inet", "fwlab").stdout
    assert listed.count("chain ") >= 3


def test_the_set_of_checked_files_is_the_projects() -> None:
    names = {p.relative_to(ROOT).as_posix() for p in SCRIPTS}
    assert {"rules/stateful-web.fw", "rules/nat/endpoint-independent.fw",
            "tests/lab/rules/reject.fw", "tests/golden/import/filter.fw"} <= names
    assert "tests/lab/rules/bad.fw" not in names


def test_a_rule_testing_two_protocols_loads(netns: str, tmp_path: Path) -> None:
    rules = tmp_path / "two.fw"
    rules.write_text(TWO_PROTOCOLS)
    checked = nft(netns, "-c", "-f", "-", script=to_nft(load_ruleset(str(rules))).text)
    assert checked.returncode == 0, checked.stderr


@pytest.mark.parametrize("path", GOLDEN_NFT, ids=lambda p: f"{p.parent.name}-{p.stem}")
def test_stored_json_is_what_nft_lists(path: Path, netns: str) -> None:
    assert nft(netns, "flush", "ruleset").returncode == 0
    loaded = nft(netns, "-f", "-", script=path.read_text())
    assert loaded.returncode == 0, loaded.stderr
    listed = nft(netns, "-j", "list", "ruleset")
    assert listed.returncode == 0, listed.stderr
    compare(path.with_suffix(".json"), listing_text(listed.stdout))


@pytest.mark.parametrize("path", sorted((ROOT / "tests/golden/import").glob("*.nft")),
                         ids=lambda p: p.stem)
def test_text_imports_as_its_json_does(path: Path) -> None:
    origin = str(path.relative_to(ROOT))
    from_json = import_nft(path.with_suffix(".json").read_text(), origin, skip_unsupported=True)
    from_text = import_nft(path.read_text(), origin, skip_unsupported=True)
    assert without_places(from_text.text) == without_places(from_json.text)


def without_places(text: str) -> list[str]:
    """The rule file without the places of skipped rules (a line for text, a path for JSON)."""
    return [line.split(": ")[-1] if "# skipped" in line else line for line in text.splitlines()]


def test_unsupported_text_is_reported_at_its_line() -> None:
    path = ROOT / "tests/golden/import/unsupported.nft"
    with pytest.raises(FwlabError) as refused:
        import_nft(path.read_text(), "unsupported.nft")
    assert str(refused.value) == "unsupported.nft:7: error: unsupported: fib daddr type"


def test_nft_errors_in_text_come_back_with_their_place() -> None:
    with pytest.raises(FwlabError) as refused:
        import_nft("table inet t {\n\tchain c {\n\t\ttcp dport accept\n\t}\n}\n", "bad.nft")
    assert str(refused.value).startswith("bad.nft: nft cannot load it: bad.nft:3:")


def test_interfaces_named_by_index_get_a_stand_in() -> None:
    text = ('table inet f {\n\tchain input {\n\t\ttype filter hook input priority 0; policy drop;'
            '\n\t\tiif "eth0" accept\n\t\tiif "lo" tcp dport 22 accept\n\t}\n}\n')
    result = import_nft(text, "iif.nft")
    assert "    iif eth0 accept\n    iif lo tcp dport 22 accept\n" in result.text


def test_import_then_exposure_on_the_command_line() -> None:
    """The issue's `fwlab import /etc/nftables.conf | fwlab exposure -`, on the export of
    stateless-web.fw: the exposure is the original's."""
    import sys

    def fwlab(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "fw", *args], cwd=ROOT, input=stdin,
                              capture_output=True, text=True, timeout=120)

    script = fwlab("export", "rules/stateless-web.fw").stdout
    imported = fwlab("import", "-", stdin=script)
    assert imported.returncode == 0, imported.stderr
    piped = fwlab("exposure", "--json", "-", stdin=imported.stdout)
    original = fwlab("exposure", "--json", "rules/stateless-web.fw")
    assert piped.returncode == original.returncode == 0, piped.stderr
    assert piped.stdout.replace('"-"', '"rules/stateless-web.fw"') == original.stdout
