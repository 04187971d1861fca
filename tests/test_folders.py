"""Output folders made by a failing command are removed again when empty."""

from __future__ import annotations

import pytest

from snubridge.errors import DataError
from snubridge.folders import output_folder


def test_failure_removes_created_folders(tmp_path):
    target = tmp_path / "a" / "b" / "c"
    with pytest.raises(DataError), output_folder(target) as folder:
        assert folder.is_dir()
        raise DataError("no data")
    assert not (tmp_path / "a").exists()
    assert tmp_path.is_dir()


def test_failure_keeps_existing_folder(tmp_path):
    target = tmp_path / "run"
    target.mkdir()
    with pytest.raises(DataError), output_folder(target):
        raise DataError("no data")
    assert target.is_dir()


def test_failure_keeps_written_files(tmp_path):
    target = tmp_path / "run" / "inner"
    with pytest.raises(DataError), output_folder(target):
        (target / "partial.json").write_text("{}")
        raise DataError("late failure")
    assert (target / "partial.json").is_file()


def test_success_keeps_folder(tmp_path):
    target = tmp_path / "run"
    with output_folder(target) as folder:
        assert folder == target
    assert target.is_dir()


def test_train_missing_data_no_folder(tmp_path):
    from snubridge.cli import main

    out = tmp_path / "never"
    status = main(["train", "--out", str(out), "--data", str(tmp_path / "missing")])
    assert status == 2
    assert not out.exists()


def test_pipeline_missing_data_no_folder(tmp_path):
    from snubridge.cli import main

    out = tmp_path / "never"
    status = main(["pipeline", "--out", str(out), "--data", str(tmp_path / "missing")])
    assert status == 2
    assert not out.exists()
