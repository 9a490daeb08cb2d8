"""The daemon gives memory back after its connection table has emptied (fw/lab/memtrim.py):
when, and how often, it asks the C library to."""

from __future__ import annotations

from fw.lab.memtrim import Trimmer, malloc_trim


def test_trims_once_the_table_falls_to_a_quarter_of_a_large_peak() -> None:
    calls = []
    trimmer = Trimmer(trim=lambda: calls.append(1) or True, minimum=1000)
    assert not any(trimmer.note(n) for n in (0, 500, 999, 400, 0))  # never large: no trim
    assert not any(trimmer.note(n) for n in (4000, 2000, 1001))  # not yet a quarter
    assert trimmer.note(1000) and calls == [1] and trimmer.trims == 1
    assert not trimmer.note(900)  # the peak starts again from the size at the trim
    assert trimmer.note(250) and trimmer.trims == 2


def test_malloc_trim_can_be_called() -> None:
    assert malloc_trim() in (True, False)
