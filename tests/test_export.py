"""`fwlab export`: every example rule file as nft text (golden files in tests/golden/export),
NAT behaviours the kernel cannot give refused at the rule, or approximated with a warning
(tests/golden/export-refused). That the kernel loads them: tests/lab/test_export_kernel.py."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from fw.core.protocols import TCP_FLAGS
from fw.dsl import load_ruleset
from fw.errors import FwlabError
from fw.export.nft import to_nft
from fw.export.nft_match import flags_expr
from fw.model import TcpFlagsMatch
from tests.golden import compare

ROOT = Path(__file__).resolve().parent.parent
RULES = sorted((ROOT / "rules").glob("*.fw"))
EXTRA = sorted((ROOT / "tests/golden/export-extra").glob("*.fw"))
REFUSED = sorted((ROOT / "tests/golden/export-refused").glob("*.fw"))
APPROXIMABLE = [p for p in REFUSED if "nat {" in p.read_text()]  # NAT behaviours, not names


def exported(path: Path, approximate: bool = False):
    return to_nft(load_ruleset(str(path.relative_to(ROOT))), approximate=approximate)


@pytest.mark.parametrize("path", RULES, ids=lambda p: p.stem)
def test_every_example_exports_as_its_golden_script(path: Path, in_repo: Path) -> None:
    result = exported(path)
    assert result.warnings == []
    compare(ROOT / "tests/golden/export" / f"{path.stem}.nft", result.text)


@pytest.mark.parametrize("path", EXTRA, ids=lambda p: p.stem)
def test_features_beyond_the_examples_export_as_golden(path: Path, in_repo: Path) -> None:
    compare(path.with_suffix(".nft"), exported(path).text)


@pytest.mark.parametrize("path", REFUSED, ids=lambda p: p.stem)
def test_what_the_kernel_cannot_do_is_refused_at_the_rule(path: Path, in_repo: Path) -> None:
    with pytest.raises(FwlabError) as refused:
        exported(path)
    compare(path.with_suffix(".err"), str(refused.value) + "\n")


@pytest.mark.parametrize("path", APPROXIMABLE, ids=lambda p: p.stem)
def test_approximate_writes_the_kernel_behaviour_and_warns(path: Path, in_repo: Path) -> None:
    result = exported(path, approximate=True)
    warnings = "".join(w.render() + "\n" for w in result.warnings)
    compare(path.with_suffix(".nft"), warnings + "----\n" + result.text)


def flags(text: str) -> str:
    set_bits = sum(TCP_FLAGS[f] for f in text.split(",") if not f.startswith("!"))
    clear = sum(TCP_FLAGS[f[1:]] for f in text.split(",") if f.startswith("!"))
    return flags_expr(TcpFlagsMatch(set=set_bits, clear=clear))


def test_tcp_flags_are_written_in_mask_form() -> None:
    assert flags("syn,!ack") == "tcp flags & (syn | ack) == syn"
    assert flags("ack") == "tcp flags & ack == ack"
    assert flags("!rst") == "tcp flags & rst == 0x0"
    assert flags("fin,syn,!rst,!ack") == "tcp flags & (fin | syn | rst | ack) == fin | syn"


def test_reject_sends_what_the_engine_sends(tmp_path: Path) -> None:
    rules = tmp_path / "r.fw"
    rules.write_text("mode stateless\npolicy input drop\ninput {\n    tcp dport 22 reject\n"
                     "    udp dport 53 reject\n    iif wan reject\n}\n")
    text = to_nft(load_ruleset(str(rules))).text
    assert "tcp dport 22 counter reject with tcp reset" in text
    assert "udp dport 53 counter reject with icmpx port-unreachable" in text
    assert 'iifname "wan" counter goto fwlab_reject' in text
    assert "meta l4proto tcp reject with tcp reset\n\t\treject with icmpx port-unreachable" in text


TWO_PROTOCOLS = """mode stateful
policy forward drop
forward {
    proto { tcp, udp } tcp dport 80 accept
    proto { icmp, tcp } tcp flags syn reject
    proto { icmp, icmpv6 } icmp type echo-request accept
    proto != { icmp, udp } tcp dport 22 accept
    proto { tcp, udp } ip saddr 192.0.2.1 accept
}
nat {
    oif wan proto { tcp, udp } udp dport 53 masquerade
}
"""


def test_a_protocol_set_beside_a_match_implying_one_of_it_is_left_out(tmp_path: Path) -> None:
    """nft refuses `meta l4proto { tcp, udp } tcp dport 80` ("conflicting protocols"); the
    set says nothing the port match does not (tests/lab/test_export_kernel.py loads it)."""
    rules = tmp_path / "r.fw"
    rules.write_text(TWO_PROTOCOLS)
    text = to_nft(load_ruleset(str(rules))).text
    assert "\t\ttcp dport 80 counter accept" in text
    assert "\t\ttcp flags & syn == syn counter reject with tcp reset" in text
    assert "\t\ticmp type echo-request counter accept" in text
    assert "meta l4proto != { icmp, udp } tcp dport 22 counter accept" in text
    assert "meta l4proto { tcp, udp } ip saddr 192.0.2.1 counter accept" in text
    assert 'oifname "wan" udp dport 53 ' in text


def test_stateful_turns_conntrack_on_even_without_ct_matches(tmp_path: Path) -> None:
    """nft turns conntrack (and with it reassembly) on only for a table that uses it: a stateful
    file that never says `ct` gets a chain that does, never jumped to (docs/fidelity.md)."""
    rules = tmp_path / "r.fw"
    rules.write_text("mode stateful\npolicy forward accept\nforward {\n    udp dport 9 drop\n}\n")
    assert "chain fwlab_conntrack {\n\t\tct state untracked counter" in to_nft(
        load_ruleset(str(rules))).text
    rules.write_text("mode stateful\npolicy forward accept\nforward {\n    ct state new drop\n}\n")
    assert "fwlab_conntrack" not in to_nft(load_ruleset(str(rules))).text


def fwlab(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "fw", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=60, input=stdin)


def test_cli_prints_the_script_and_writes_it_with_o(tmp_path: Path) -> None:
    printed = fwlab("export", "rules/stateful-web.fw")
    assert printed.returncode == 0
    assert printed.stdout == (ROOT / "tests/golden/export/stateful-web.nft").read_text()
    out = tmp_path / "web.nft"
    assert fwlab("export", "rules/stateful-web.fw", "-o", str(out)).returncode == 0
    assert out.read_text() == printed.stdout


def test_cli_refusal_is_one_line_exit_2() -> None:
    result = fwlab("export", "tests/golden/export-refused/both.fw")
    assert result.returncode == 2
    assert result.stdout == ""
    assert result.stderr.startswith("fwlab: tests/golden/export-refused/both.fw:6:5: error: "
                                    "the kernel cannot give 'mapping address-port-dependent'")
    assert len(result.stderr.splitlines()) == 1


def test_cli_bad_rule_file_is_one_line_exit_2() -> None:
    result = fwlab("export", "tests/golden/bad/undefined-name.fw")
    assert result.returncode == 2
    assert result.stderr.startswith("fwlab: tests/golden/bad/undefined-name.fw:5:23: error:")


def test_cli_approximate_warns_on_stderr() -> None:
    result = fwlab("export", "--approximate", "tests/golden/export-refused/both.fw")
    assert result.returncode == 0
    assert "warning: exported approximately" in result.stderr
    assert "masquerade" in result.stdout
