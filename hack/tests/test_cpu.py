"""``hack/cpu.py``: CPU by program from the lines ``dump-acct`` prints (these were printed by it, in a CI run)."""

# ruff: noqa: E501 - dump-acct's lines, as it prints them

from __future__ import annotations

import cpu

DUMP = """\
kube-apiserver  |v3| 16650.00|  3823.00|108930.00|     0|     0|1767552.00|     0.00|     3147|     2234|     |       0|__      |Sun Dec  6 19:52:13 2026
python          |v3|  2690.00|   830.00| 74260.00|     0|     0|1235968.00|     0.00|     5861|     4866|     |       0|__      |Sun Dec  6 19:53:10 2026
python          |v3|  2500.00|   390.00| 74300.00|     0|     0|1148928.00|     0.00|     5857|     4866|     |       0|__      |Sun Dec  6 19:53:10 2026
date            |v3|     0.00|     0.00|     0.00|     0|     0|  2996.00|     0.00|    32536|    32519|     |       0|__      |Sun Dec  6 19:51:35 2026
"""


def test_cpu_is_summed_by_program_in_seconds() -> None:
    seconds, count = cpu.by_program([*DUMP.splitlines(), "", "garbage"])
    assert round(seconds["kube-apiserver"], 2) == 204.73 and count["kube-apiserver"] == 1
    assert round(seconds["python"], 2) == 64.10 and count["python"] == 2
    assert seconds["date"] == 0.0 and count["date"] == 1


def test_the_table_has_the_total_and_the_top_programs_first() -> None:
    seconds, count = cpu.by_program(DUMP.splitlines())
    lines = cpu.table(seconds, count, wall=120.0, top=2).splitlines()
    assert lines[0] == "wall 2.0 min; CPU counted 4.5 min (2.24 cores on average)"
    assert [line.split()[0] for line in lines[2:]] == ["kube-apiserver", "python"]
    assert lines[2].split()[1:] == ["3.41", "76.2%", "1"]
