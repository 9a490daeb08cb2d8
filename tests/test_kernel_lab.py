"""The kernel engine's reading of nft and conntrack (no root): what `status`, `conntrack` and
`nat` make of the kernel's answers, and the `--engine` option's errors. The lab itself is in
tests/lab/test_kernel_engine.py."""

from __future__ import annotations

import pytest

from fw.export.nft import LINK_CONTROL_NOTE
from fw.lab.kernel_conntrack import conntrack_rows, nat_rows, parse
from fw.lab.kernel_engine import LOOPBACK_NOTE, POLICY_NOTE, chain_counters, lab_additions

from .cli import fwlab

TCP_SNAT = ("ipv4     2 tcp      6 118 TIME_WAIT src=192.0.2.2 dst=203.0.113.10 sport=43038 "
            "dport=80 packets=5 bytes=268 src=203.0.113.10 dst=203.0.113.1 sport=80 dport=43038 "
            "packets=4 bytes=218 [ASSURED] mark=0 use=1")
ICMP_SNAT = ("ipv4     2 icmp     1 28 src=192.0.2.2 dst=203.0.113.10 type=8 code=0 id=14967 "
             "packets=1 bytes=84 src=203.0.113.10 dst=203.0.113.1 type=0 code=0 id=14967 "
             "packets=1 bytes=84 mark=0 use=1")
UDP6_PLAIN = ("ipv6     10 udp      17 28 src=2001:db8:1::2 dst=2001:db8:2::10 sport=5 dport=53 "
              "[UNREPLIED] src=2001:db8:2::10 dst=2001:db8:1::2 sport=53 dport=5 mark=0 use=1")
TCP_DNAT = ("ipv4     2 tcp      6 431999 ESTABLISHED src=203.0.113.66 dst=203.0.113.1 "
            "sport=40000 dport=8080 src=192.0.2.10 dst=203.0.113.66 sport=80 dport=40000 "
            "[ASSURED] mark=0 use=1")


def test_a_masqueraded_tcp_connection_reads_as_the_engines_rows() -> None:
    (row,) = conntrack_rows([parse(TCP_SNAT)])
    assert row == {"proto": "tcp", "orig": "192.0.2.2:43038 -> 203.0.113.10:80",
                   "reply": "203.0.113.10:80 -> 203.0.113.1:43038", "state": "time_wait",
                   "assured": True, "expires_in": 118, "packets": [5, 4], "bytes": [268, 218]}
    (nat,) = nat_rows([parse(TCP_SNAT)])
    assert nat["nat"] == "snat" and nat["translated"] == "203.0.113.1:43038 -> 203.0.113.10:80"


def test_icmp_ipv6_dnat_and_flows_without_accounting() -> None:
    icmp = parse(ICMP_SNAT)
    assert conntrack_rows([icmp])[0]["orig"] == "192.0.2.2 -> 203.0.113.10 id 14967"
    assert nat_rows([icmp])[0]["translated"] == "203.0.113.1 -> 203.0.113.10 id 14967"
    udp = conntrack_rows([parse(UDP6_PLAIN)])[0]
    assert udp["orig"] == "[2001:db8:1::2]:5 -> [2001:db8:2::10]:53"
    assert udp["state"] == "unreplied" and udp["packets"] is None  # nf_conntrack_acct was off
    assert nat_rows([parse(UDP6_PLAIN)]) == []
    (forward,) = nat_rows([parse(TCP_DNAT)])
    assert forward["nat"] == "dnat"
    assert forward["translated"] == "203.0.113.66:40000 -> 192.0.2.10:80"
    assert parse("conntrack v1.4.7 (conntrack-tools): 2 flow entries have been shown.") is None


def nft_rule(handle: int, packets: int | None, comment: str | None = None) -> dict:
    expr = [{"counter": {"packets": packets, "bytes": packets * 60}}] if packets is not None else []
    return {"handle": handle, "expr": expr, **({"comment": comment} if comment else {})}


RECORDED = {"policy": "drop", "rules": [{"file": "a.fw", "line": 7, "text": "tcp dport 22 accept"},
                                        {"file": "a.fw", "line": 8, "text": "drop"}]}


def test_nft_counters_go_to_the_rule_files_lines_in_order() -> None:
    listed = [nft_rule(1, None, LOOPBACK_NOTE), nft_rule(2, None, LINK_CONTROL_NOTE),
              nft_rule(3, 4, "user text"), nft_rule(4, 2), nft_rule(9, 5, POLICY_NOTE)]
    got = chain_counters(listed, RECORDED)
    assert [(r["line"], r["hits"], r["bytes"]) for r in got["rules"]] == [(7, 4, 240), (8, 2, 120)]
    assert (got["policy"], got["policy_hits"], got["policy_bytes"]) == ("drop", 5, 300)
    assert "mismatch" not in got


def test_a_table_changed_by_hand_is_said_not_guessed() -> None:
    got = chain_counters([nft_rule(3, 4), nft_rule(9, 5, POLICY_NOTE)], RECORDED)
    assert got["rules"] == [] and "changed outside fwlab" in got["mismatch"]


def test_the_lab_adds_loopback_and_policy_counters_in_the_same_transaction() -> None:
    text = lab_additions()
    assert text.count("insert rule inet fwlab") == 2 and text.count("add rule inet fwlab") == 3
    assert f'comment "{POLICY_NOTE}"' in text and '"lo" accept' in text


@pytest.mark.parametrize("args, message", [
    (["--engine", "kernel"], "--engine kernel: the engine is measured with --live"),
    (["--live", "--engine", "linux"], "--engine 'linux': fwlab, kernel, or both as fwlab,kernel"),
    (["--live", "--engine", "kernel,kernel"],
     "--engine 'kernel,kernel': fwlab, kernel, or both as fwlab,kernel"),
])
def test_exposure_engine_errors_are_one_line(args: list[str], message: str) -> None:
    result = fwlab("exposure", "rules/stateful-web.fw", *args)
    assert result.code == 2 and result.out == ""
    assert result.err.strip() == f"fwlab: {message}"


def test_both_engines_stand_side_by_side_and_a_kernel_difference_says_so() -> None:
    from rich.console import Console

    from fw.analysis.exposure import analyse
    from fw.commands.common import routing_from
    from fw.commands.exposure import Result, compare_live, table
    from fw.dsl import load_ruleset

    exposure = analyse(load_ruleset("rules/stateless-web.fw"), routing_from(None))
    seen = {"count": 13, "ranges": ["32768-32780"]}
    short = {"count": 12, "ranges": ["32769-32780"]}
    fwlab_live = {"tcp_syn": seen, "tcp_any": seen, "udp": seen, "engine": "fwlab"}
    kernel_live = {"tcp_syn": short, "tcp_any": seen, "udp": seen, "engine": "kernel"}
    result = Result("rules/stateless-web.fw", exposure, {"fwlab": fwlab_live,
                                                           "kernel": kernel_live})
    console = Console(width=200, record=True)
    console.print(table([result]))
    text = console.export_text()
    assert "measured: fwlab's engine" in text and "measured: Linux (exported to nft)" in text
    assert result.live is fwlab_live and result.json()["live_by_engine"]["kernel"] is kernel_live
    assert compare_live(result, fwlab_live, (32760, 32780)) == []
    (line,) = compare_live(result, kernel_live, (32760, 32780))
    assert "tcp_syn: computed 13 (32768-32780), measured through the kernel 12" in line
