"""appliance.atomic.write_atomic: whole old or whole new content, never a leftover temporary file."""
import os
import stat

import pytest

from appliance.atomic import write_atomic


def test_replaces_the_file_with_the_given_mode_and_leaves_no_temporary(tmp_path):
    target = tmp_path / "solargw.toml"
    target.write_text("old")
    write_atomic(target, "new", 0o600)
    assert target.read_text() == "new"
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    assert os.listdir(tmp_path) == ["solargw.toml"]


def test_takes_mode_from_another_file(tmp_path):
    model = tmp_path / "model"
    model.write_text("")
    model.chmod(0o640)
    copy = tmp_path / "copy"
    write_atomic(copy, b"\x00bytes", owner_of=model)
    assert copy.read_bytes() == b"\x00bytes"
    assert stat.S_IMODE(copy.stat().st_mode) == 0o640


def test_a_failed_write_keeps_the_old_content_and_no_temporary(tmp_path, monkeypatch):
    target = tmp_path / "sessions.json"
    target.write_text("old")

    def refuse(*_args):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", refuse)
    with pytest.raises(OSError):
        write_atomic(target, "new")
    assert target.read_text() == "old"
    assert os.listdir(tmp_path) == ["sessions.json"]
