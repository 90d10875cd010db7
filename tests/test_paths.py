"""core.paths.atomic_write: the old file or the whole new one, never a partial file or a stray temp file."""

from __future__ import annotations

import os
import stat

import pytest

from bmc_model.core.paths import atomic_write


def test_success_replaces_and_creates_parent_folders(tmp_path):
    path = tmp_path / "a" / "b" / "out.json"
    with atomic_write(path) as f:
        f.write("first")
    with atomic_write(path) as f:
        f.write("second")
    assert path.read_text() == "second"
    assert os.listdir(path.parent) == ["out.json"]
    umask = os.umask(0)
    os.umask(umask)
    assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask  # an ordinary file, not mkstemp's 0600


def test_binary_mode_and_explicit_perm(tmp_path):
    path = tmp_path / "out.bin"
    with atomic_write(path, "wb", perm=0o640) as f:
        f.write(b"\x00\x01")
    assert path.read_bytes() == b"\x00\x01"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640


@pytest.mark.parametrize("exc", [ValueError, KeyboardInterrupt])
def test_an_exception_in_the_write_leaves_the_old_file_and_no_temp_file(tmp_path, exc):
    path = tmp_path / "out.json"
    path.write_text("old")
    with pytest.raises(exc):
        with atomic_write(path) as f:
            f.write("half a new fi")
            raise exc
    assert path.read_text() == "old"
    assert os.listdir(tmp_path) == ["out.json"]


def test_text_or_binary_only(tmp_path):
    with pytest.raises(ValueError):
        with atomic_write(tmp_path / "x", "a"):
            pass
    assert os.listdir(tmp_path) == []
