"""Atomic writes: files get the permissions an ordinary open() would give them."""

from __future__ import annotations

import os
import stat

import pytest

from mnistlab.core.fsio import atomic_write_bytes, write_json


@pytest.mark.parametrize(
    "umask, mode", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)], ids=["022", "077", "002"]
)
def test_atomic_writes_respect_the_umask(tmp_path, umask, mode):
    before = os.umask(umask)
    try:
        atomic_write_bytes(tmp_path / "a.bin", b"x")
        atomic_write_bytes(tmp_path / "a.bin", b"y")  # replacing a file, as every checkpoint save does
        write_json(tmp_path / "b.json", {"k": 1})
    finally:
        os.umask(before)
    for name in ("a.bin", "b.json"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == mode, name
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.json"]  # no temp file left
