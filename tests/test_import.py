"""`fwlab import`: nft rule sets (as `nft -j list ruleset` JSON, stored beside the .nft they
came from; tests/lab/test_export_kernel.py keeps them honest and imports the text too) become
rule files that `fwlab check` accepts; what fwlab cannot say is refused where it stands."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fw.dsl import load
from fw.errors import FwlabError
from fw.export.nft_import import import_nft
from tests.golden import compare

ROOT = Path(__file__).resolve().parent.parent
IMPORTS = sorted((ROOT / "tests/golden/import").glob("*.json"))


def imported(path: Path, skip: bool = True) -> str:
    origin = str(path.relative_to(ROOT))
    return import_nft(path.read_text(), origin, skip_unsupported=skip).text


def check_errors(text: str, tmp_path: Path) -> list[str]:
    rules = tmp_path / "imported.fw"
    rules.write_text(text)
    return [d.render() for d in load(str(rules)).errors]


@pytest.mark.parametrize("path", IMPORTS, ids=lambda p: p.stem)
def test_import_golden_and_accepted_by_check(path: Path, tmp_path: Path) -> None:
    text = imported(path)
    compare(path.with_suffix(".fw"), text)
    assert check_errors(text, tmp_path) == []


def test_unsupported_json_is_refused_at_its_json_path() -> None:
    with pytest.raises(FwlabError) as refused:
        imported(ROOT / "tests/golden/import/unsupported.json", skip=False)
    assert str(refused.value) == ("tests/golden/import/unsupported.json: nftables[4].rule.expr[0]:"
                                  " error: unsupported: fib daddr type")


def test_a_loop_of_jumps_is_refused() -> None:
    with pytest.raises(FwlabError, match=r"a loop of jumps: input -> a -> b -> a"):
        imported(ROOT / "tests/golden/import/loop.json", skip=False)


def test_skipped_rules_leave_a_comment_where_they_stood() -> None:
    text = imported(ROOT / "tests/golden/import/unsupported.json")
    body = text.split("input {\n")[1].splitlines()
    assert body[0].strip() == "ct state established,related accept"
    assert body[1].strip().startswith("# skipped: ") and body[1].endswith("fib daddr type")
    assert body[-2].strip() == "udp dport 53 accept"


def test_not_a_ruleset_is_one_line() -> None:
    with pytest.raises(FwlabError, match="not the JSON of `nft -j list ruleset`"):
        import_nft('{"tables": []}', "x.json")
    with pytest.raises(FwlabError, match=r"^x.json:1:\d+: error: not JSON"):
        import_nft('{"nftables": [', "x.json")


def fwlab(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fw", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, input=stdin)


def test_cli_reads_stdin_and_refuses_in_one_line() -> None:
    json_text = (ROOT / "tests/golden/import/filter.json").read_text()
    result = fwlab("import", "-", stdin=json_text)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("# imported by fwlab from <stdin> (nftables)\nmode stateful")
    refused = fwlab("import", "tests/golden/import/unsupported.json")
    assert refused.returncode == 2
    assert refused.stderr.splitlines() == [
        "fwlab: tests/golden/import/unsupported.json: nftables[4].rule.expr[0]: error: "
        "unsupported: fib daddr type"]


def test_cli_skip_unsupported_names_each_rule_on_stderr(tmp_path: Path) -> None:
    out = tmp_path / "out.fw"
    result = fwlab("import", "--skip-unsupported", "tests/golden/import/unsupported.json",
                   "-o", str(out))
    assert result.returncode == 0
    assert len(result.stderr.splitlines()) == 3  # the rate limit is imported
    assert fwlab("check", str(out)).returncode == 0


def test_rule_lines_follow_tables_chains_and_replacement() -> None:
    from fw.export.nft_text import rule_lines

    filter_lines = rule_lines((ROOT / "tests/golden/import/filter.nft").read_text())
    assert filter_lines[("inet", "filter", "ssh_in")] == [14, 15]
    assert filter_lines[("inet", "filter", "input")][:3] == [25, 26, 27]
    assert filter_lines[("ip", "nat", "postrouting")] == [57, 58]
    exported = rule_lines((ROOT / "tests/golden/export/stateful-web.nft").read_text())
    assert exported[("inet", "fwlab", "forward")][:3] == [14, 15, 16]
    oneliners = rule_lines("add rule inet t c tcp dport 1 accept\n"
                           "table ip x {\n chain c { udp dport 2 drop; accept; }\n}\n"
                           "delete table inet t\n")
    assert oneliners == {("ip", "x", "c"): [3, 3]}
