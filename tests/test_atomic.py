"""Atomic writes: complete files or none, usual permissions, nothing left behind on failure."""

import os
import stat

import pytest

from group_attention.atomic import atomic_write, atomic_write_text


def test_writes_creates_folders_and_replaces(tmp_path):
    path = tmp_path / "a" / "b" / "results.md"
    atomic_write_text(path, "first")
    atomic_write_text(path, "second")
    assert path.read_text() == "second"
    assert sorted(p.name for p in path.parent.iterdir()) == ["results.md"]


def test_permissions_follow_the_umask_not_mkstemp(tmp_path):
    old = os.umask(0o022)
    try:
        path = atomic_write_text(tmp_path / "table.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path):
    path = atomic_write_text(tmp_path / "checkpoint.pt", "good")

    def broken(stream):
        stream.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(path, broken)
    assert path.read_text() == "good"
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]
