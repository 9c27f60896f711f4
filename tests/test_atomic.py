"""planetrl.atomic: a write is all or nothing; leftovers of killed writes are recognised."""

from __future__ import annotations

import pytest

from planetrl import atomic


def test_atomic_writes_leave_the_old_file_or_the_new(tmp_path):
    """A write that fails midway keeps the old file and leaves no temporary file behind; one
    that a kill interrupted leaves one, which ``remove_temporary`` deletes."""
    path = tmp_path / "state.json"
    atomic.atomic_write_json(path, {"a": 1})
    with pytest.raises(RuntimeError, match="midway"):
        with atomic.atomic_write(path) as handle:
            handle.write(b"{not json")
            raise RuntimeError("midway")
    assert path.read_text() == '{\n  "a": 1\n}\n'
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
    (tmp_path / ".state.json.k3j2.tmp").write_bytes(b"half")  # as a SIGKILL leaves it
    (tmp_path / ".video.mp4.x1.tmp.mp4").write_bytes(b"half")
    assert atomic.is_temporary(".state.json.k3j2.tmp") and not atomic.is_temporary("state.json")
    assert len(atomic.remove_temporary(tmp_path)) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["state.json"]
