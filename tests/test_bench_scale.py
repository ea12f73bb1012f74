"""bench-scale's CPU accounting: the servers' CPU read from the kernel's process table."""

import os
from pathlib import Path

import pytest

from benchmarks.bench_scale import cpu_meanwhile, server_cpu

TICK = os.sysconf("SC_CLK_TCK")


def fake_process(procfs: Path, pid: int, name: str, utime: int, stime: int) -> None:
    (procfs / str(pid)).mkdir()
    (procfs / str(pid) / "comm").write_text(name + "\n")
    # the name in the stat line may hold spaces and parentheses: fields are counted after its last ')'
    fields = ["S", *["0"] * 10, str(utime), str(stime), *["0"] * 20]
    (procfs / str(pid) / "stat").write_text(f"{pid} ({name} (x) y) {' '.join(fields)}\n")


def test_server_cpu_sums_each_servers_processes_by_name(tmp_path: Path) -> None:
    fake_process(tmp_path, 10, "mariadbd", utime=3 * TICK, stime=TICK)
    fake_process(tmp_path, 11, "mosquitto", utime=TICK, stime=0)
    fake_process(tmp_path, 12, "mosquitto", utime=TICK, stime=TICK)
    fake_process(tmp_path, 13, "python3", utime=50 * TICK, stime=0)
    (tmp_path / "14").mkdir()  # a process gone while the table was read
    (tmp_path / "self").mkdir()

    assert server_cpu(tmp_path) == {"the database server": 4.0, "the broker": 3.0}


def test_cpu_meanwhile_divides_the_work_over_the_cores(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    monkeypatch.setattr(
        "benchmarks.bench_scale.server_cpu", lambda: {"the database server": 5.0, "the broker": 1.5}
    )

    used = cpu_meanwhile(3.0, {"the database server": 2.0, "the broker": 0.5})

    assert used["  the database server"] == 3.0 and used["  the broker"] == 1.0
    assert used["  all of it over 2 cores: the wall time it needs at least"] == 3.5
