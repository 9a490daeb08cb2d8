"""Every user file is opened the same careful way: only regular files, within a size limit, and
a rule set's includes within a depth and a total of lines, each limit one line naming the file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fw.dsl import load
from fw.dsl.build import Builder
from fw.dsl.diagnostics import Collector
from fw.dsl.includes import MAX_LINES
from fw.errors import TopologyError
from fw.lab.topology import load_topology
from fw.userfiles import MAX_TEXT_BYTES, UnreadableFile, read_bytes, read_text


@pytest.fixture
def odd_files(tmp_path: Path) -> dict[str, str]:
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "dir").mkdir()
    return {"fifo": str(tmp_path / "fifo"), "dir": str(tmp_path / "dir"),
            "zero": "/dev/zero", "random": "/dev/urandom", "missing": str(tmp_path / "no")}


WHY = {"fifo": "is a FIFO, not a regular file", "dir": "is a directory, not a regular file",
       "zero": "is a character device, not a regular file",
       "random": "is a character device, not a regular file",
       "missing": "no such file or directory"}


@pytest.mark.parametrize("kind", sorted(WHY))
def test_only_regular_files_are_read(odd_files: dict[str, str], kind: str) -> None:
    with pytest.raises(UnreadableFile) as info:
        read_bytes(odd_files[kind])
    assert str(info.value) == f"{odd_files[kind]}: {WHY[kind]}"


@pytest.mark.parametrize("kind", sorted(WHY))
def test_a_rule_file_or_include_that_is_not_a_file(tmp_path: Path, odd_files: dict[str, str],
                                                   kind: str) -> None:
    assert [d.headline for d in load(odd_files[kind]).diagnostics] == [
        f"{odd_files[kind]}: error: cannot read the file: {WHY[kind]}"]
    main = tmp_path / "main.fw"
    main.write_text(f'mode stateful\ninclude "{odd_files[kind]}"\npolicy input drop\n')
    assert [d.headline for d in load(str(main)).diagnostics] == [
        f"{main}:2:9: error: cannot include '{odd_files[kind]}': {WHY[kind]}"]


@pytest.mark.parametrize("kind", ["fifo", "zero"])
def test_a_topology_that_is_not_a_file(odd_files: dict[str, str], kind: str) -> None:
    with pytest.raises(TopologyError, match=f"cannot read: {WHY[kind]}"):
        load_topology(odd_files[kind])


def test_size_limit(tmp_path: Path) -> None:
    big = tmp_path / "big.fw"
    with big.open("wb") as f:
        f.truncate(MAX_TEXT_BYTES + 1)  # sparse: the size is checked before anything is read
    with pytest.raises(UnreadableFile, match="is larger than the limit of 16 MB for this file"):
        read_bytes(big)
    assert load(str(big)).diagnostics[0].message == (
        "cannot read the file: is larger than the limit of 16 MB for this file")


def test_a_file_whose_size_lies_is_still_bounded() -> None:
    """/proc files say they are empty; what is read stops at the limit all the same."""
    assert read_text("/proc/self/status", limit=1 << 20).startswith("Name:")
    with pytest.raises(UnreadableFile, match="limit of 10 bytes"):
        read_bytes("/proc/self/status", limit=10)


def test_text_must_be_utf8_without_nul(tmp_path: Path) -> None:
    (tmp_path / "latin1").write_bytes(b"caf\xe9")
    (tmp_path / "nul").write_bytes(b"mode\x00")
    with pytest.raises(UnreadableFile, match=r"is not UTF-8 text \(byte 3\)"):
        read_text(tmp_path / "latin1")
    with pytest.raises(UnreadableFile, match="NUL bytes"):
        read_text(tmp_path / "nul")


# --- includes: a diamond is legitimate, an exponential one is refused at once ---------------


def chain(tmp_path: Path, levels: int, times: int, leaf: str) -> Path:
    """main.fw includes l1.part `times` times, l1 includes l2 `times` times, and so on."""
    for level in range(1, levels + 1):
        body = leaf if level == levels else f'include "l{level + 1}.part"\n' * times
        (tmp_path / f"l{level}.part").write_text(body)
    main = tmp_path / "main.fw"
    main.write_text('mode stateful\npolicy forward drop\n' + 'include "l1.part"\n' * times)
    return main


def test_a_diamond_gives_its_rules_once_per_inclusion(tmp_path: Path) -> None:
    main = chain(tmp_path, 3, 2, "forward {\n    tcp dport 22 accept\n}\n")
    loaded = load(str(main))
    assert loaded.errors == []
    assert len(loaded.ruleset.chains["forward"]) == 8


def test_an_exponential_diamond_is_refused_before_it_is_walked(tmp_path: Path) -> None:
    main = chain(tmp_path, 21, 2, "forward {\n    tcp dport 22 accept\n}\n")
    builder = Builder(Collector())
    builder.load(str(main))
    assert builder.files == [str(main)]  # nothing below the main file was walked
    assert len(builder.sources.files) == 22  # each file read and parsed once
    headlines = [d.headline for d in builder.out.items]
    assert headlines == [
        f"{main}:{line}:9: error: including '{tmp_path}/l1.part' takes the rule set past the "
        f"limit of {MAX_LINES:,} lines (each inclusion of a file counts)" for line in (3, 4)]


def test_two_spellings_of_one_file_are_read_once(tmp_path: Path) -> None:
    (tmp_path / "a.part").write_text("forward {\n    tcp dport 22 accept\n}\n")
    main = tmp_path / "main.fw"
    main.write_text('mode stateful\ninclude "a.part"\ninclude "./a.part"\n')
    builder = Builder(Collector())
    builder.load(str(main))
    assert len(builder.sources.files) == 2 and len(builder.chains["forward"]) == 2


def test_too_many_lines_in_one_file(tmp_path: Path) -> None:
    many = tmp_path / "many.fw"
    many.write_text("mode stateful\n" + "\n" * MAX_LINES)
    assert load(str(many)).diagnostics[0].message == (
        f"cannot read the file: has {MAX_LINES + 1:,} lines, over the limit of {MAX_LINES:,}")
