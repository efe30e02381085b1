"""src/atomic.py and src/memory.py: writes a reader never sees half done, and one memory measure."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from src.atomic import atomic_folder, write_text_atomic
from src.memory import peak_memory_gb, release_and_reset_peak


def test_a_file_is_replaced_whole_and_no_temporary_is_left(tmp_path):
    path = tmp_path / "deep" / "metrics.json"
    write_text_atomic(path, "first")
    write_text_atomic(path, "second")
    assert path.read_text() == "second"
    assert [p.name for p in path.parent.iterdir()] == ["metrics.json"]


def test_concurrent_folder_writers_leave_one_complete_folder(tmp_path):
    target = tmp_path / "cache" / "entry"
    barrier = threading.Barrier(4)

    def writer(n: int) -> None:
        with atomic_folder(target) as folder:
            (folder / "part").write_text(str(n))
            barrier.wait()  # all four have written before any renames
            (folder / "report.json").write_text(str(n))

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(p.name for p in target.iterdir()) == ["part", "report.json"]
    assert (target / "part").read_text() == (target / "report.json").read_text()  # one writer's, whole
    assert [p.name for p in target.parent.iterdir()] == ["entry"]  # no temporary folders left


def test_a_failed_folder_write_publishes_nothing(tmp_path):
    target = tmp_path / "entry"
    with pytest.raises(RuntimeError), atomic_folder(target) as folder:
        (folder / "half").write_text("x")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_peak_memory_is_at_least_what_is_in_use():
    in_use = release_and_reset_peak()
    block = bytearray(200 * 2**20)  # 200 MiB, touched
    block[::4096] = b"x" * len(block[::4096])
    assert peak_memory_gb() >= in_use + 0.15
    del block
    assert Path("/proc/self/status").exists()  # the Linux measure these figures come from
