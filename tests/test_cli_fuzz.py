"""Hostile input through the real CLI: damaged captures, mutated rule files with includes of
things that are not files, mangled packet descriptions. Whatever comes in, `fwlab` exits 0, 1 or
2 with a message, never 70 (an internal error) and never a traceback, and never hangs.

The commands run in this process (tests/cli.py), so a few hundred runs take seconds; the whole
file stays well under a minute.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests import captures as cap
from tests.cli import Result, fwlab

ROOT = Path(__file__).resolve().parent.parent
RULES = [str(p.relative_to(ROOT)) for p in sorted((ROOT / "rules").glob("*.fw"))]
RULE_SOURCES = [(ROOT / p).read_text() for p in RULES]
CAPTURES = cap.seeds()
PACKETS = [
    "tcp 203.0.113.66:80 -> 192.0.2.2:40000 flags SA seq 1 ack 1 len 100",
    "udp [2001:db8:1::2]:5353 -> [2001:db8:2::10]:53",
    "icmp 192.0.2.2 -> 203.0.113.10 type echo-request id 7",
    "icmp 198.51.100.1 -> 192.0.2.2 type time-exceeded quoting udp 192.0.2.2:40000 -> "
    "203.0.113.10:53",
    "icmpv6 2001:db8:2::10 -> 2001:db8:1::2 type packet-too-big quoting tcp "
    "[2001:db8:1::2]:40000 -> [2001:db8:2::10]:80 flags A",
    "proto 47 192.0.2.2 -> 203.0.113.10",
]
# what a mutated include may point at, inside the test's own directory
INCLUDE_TARGETS = ["fifo", "/dev/zero", "/dev/urandom", "dir", "main.fw", "part.fw",
                   "missing.fw", "deep0.fw", "diamond0.fw"]
FUZZ = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def assert_clean(result: Result) -> None:
    """The contract: a verdict (0), a difference or warning (1), or a one-line error (2)."""
    text = result.out + result.err
    assert result.code in (0, 1, 2), text[-2000:]
    assert "Traceback" not in text and "internal error" not in text, text[-2000:]


# --- generators --------------------------------------------------------------------------------


@st.composite
def damaged_bytes(draw: st.DrawFn, seeds: list[bytes]) -> bytes:
    """A seed with bytes overwritten, ranges cut out or repeated, and the tail cut off."""
    data = bytearray(draw(st.sampled_from(seeds)))
    for _ in range(draw(st.integers(0, 6))):
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        action = draw(st.sampled_from(["set", "set", "cut", "repeat", "insert"]))
        size = draw(st.integers(1, 16))
        if action == "set" and data:
            data[at] = draw(st.integers(0, 255))
        elif action == "cut":
            del data[at : at + size]
        elif action == "repeat":
            data[at:at] = data[at : at + size]
        else:
            data[at:at] = draw(st.binary(min_size=1, max_size=size))
    return bytes(data[: draw(st.integers(0, len(data)))])


TOKEN = re.compile(r"\s+|[^\s]+")


@st.composite
def mutated_tokens(draw: st.DrawFn, sources: list[str], extra: st.SearchStrategy[str]) -> str:
    """A source split into words and spaces, then words deleted, repeated, swapped or added."""
    parts = TOKEN.findall(draw(st.sampled_from(sources)))
    for _ in range(draw(st.integers(1, 5))):
        i = draw(st.integers(0, len(parts) - 1))
        action = draw(st.sampled_from(["delete", "duplicate", "swap", "add"]))
        if action == "delete" and len(parts) > 1:
            del parts[i]
        elif action == "duplicate":
            parts.insert(draw(st.integers(0, len(parts))), parts[i])
        elif action == "swap":
            j = draw(st.integers(0, len(parts) - 1))
            parts[i], parts[j] = parts[j], parts[i]
        else:
            parts.insert(i, draw(extra))
    return "".join(parts)


def include_line() -> st.SearchStrategy[str]:
    return st.sampled_from(INCLUDE_TARGETS).map(lambda target: f'\ninclude "{target}"\n')


RULE_WORDS = st.one_of(st.text(max_size=6), include_line(), st.sampled_from(
    ["{", "}", ",", "$lan_net", "define", "quoting", "ct", "nat", "\n"]))
PACKET_WORDS = st.one_of(st.text(max_size=5), st.sampled_from(
    ["quoting", "->", "tcp", "udp", "icmp", "icmpv6", "proto", "[", "]", ":", "flags", "type",
     "len", "65536", "-1", "0x10", "::", "time-exceeded", PACKETS[3]]))


# --- the lab of hostile files ------------------------------------------------------------------


@contextmanager
def hostile_dir() -> Iterator[Path]:
    """A directory with a FIFO, a directory, a deep include chain and an exponential diamond."""
    with tempfile.TemporaryDirectory() as tmp:
        d = Path(tmp)
        os.mkfifo(d / "fifo")
        (d / "dir").mkdir()
        (d / "part.fw").write_text("forward {\n    tcp dport 22 accept\n}\n")
        for i in range(40):
            (d / f"deep{i}.fw").write_text(f'include "deep{i + 1}.fw"\n' if i < 39 else "")
            (d / f"diamond{i}.fw").write_text(f'include "diamond{i + 1}.fw"\n' * 2
                                              if i < 39 else "")
        yield d


def run_in(d: Path, *args: str) -> Result:
    """fwlab with `d` as the working directory, so relative includes land among its files."""
    cwd = os.getcwd()
    os.chdir(d)
    try:
        return fwlab(*args)
    finally:
        os.chdir(cwd)


# --- the properties ----------------------------------------------------------------------------


@FUZZ
@given(data=st.one_of(damaged_bytes(CAPTURES), st.binary(max_size=300)),
       rules=st.sampled_from(RULES), json=st.booleans())
def test_replay_of_any_capture(data: bytes, rules: str, json: bool) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        capture = Path(tmp) / "capture.pcap"
        capture.write_bytes(data)
        out = str(Path(tmp) / "out.pcap")
        args = ["replay", str(ROOT / rules), str(capture), "--out", out, "--nat"]
        assert_clean(fwlab(*args, *(["--json"] if json else [])))


@FUZZ
@given(text=mutated_tokens(RULE_SOURCES, RULE_WORDS), command=st.sampled_from(
    ["check", "explain", "replay"]))
def test_mutated_rules_with_hostile_includes(text: str, command: str) -> None:
    with hostile_dir() as d:
        (d / "main.fw").write_text(text, encoding="utf-8", errors="surrogatepass")
        capture = d / "capture.pcapng"
        capture.write_bytes(CAPTURES[2])
        extra = {"check": [], "explain": [PACKETS[0]], "replay": [str(capture)]}[command]
        assert_clean(run_in(d, command, "main.fw", *extra))


@FUZZ
@given(packet=mutated_tokens(PACKETS, PACKET_WORDS), after=st.lists(
    mutated_tokens(PACKETS, PACKET_WORDS), max_size=2), rules=st.sampled_from(RULES))
def test_explain_of_any_packet_description(packet: str, after: list[str], rules: str) -> None:
    args = [arg for text in after for arg in ("--after", text)]
    assert_clean(fwlab("explain", str(ROOT / rules), packet, *args))


def test_nesting_and_repetition_at_their_extremes() -> None:
    """The shapes that once crashed or hung, at sizes no mutation reaches."""
    deep = "icmp 198.51.100.1 -> 192.0.2.2 type time-exceeded quoting " * 1000 + PACKETS[0]
    assert fwlab("explain", str(ROOT / RULES[0]), deep).code == 2
    with hostile_dir() as d:
        for target in ("fifo", "/dev/zero", "/dev/urandom", "deep0.fw", "diamond0.fw"):
            (d / "main.fw").write_text(f'mode stateful\ninclude "{target}"\n')
            result = run_in(d, "check", "main.fw")
            assert_clean(result)
            assert result.code == 2
