"""The model folder's caches are written whole or not at all, and a cache that cannot be written stops nothing."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from enhancer.cache_files import save_atomically


def test_a_reader_sees_the_old_file_or_the_whole_new_one(tmp_path: Path) -> None:
    dest = tmp_path / "reference.npy"
    dest.write_bytes(b"old")
    seen_while_writing: list[bytes] = []

    def write(tmp: Path) -> None:
        np.save(tmp, np.arange(4, dtype=np.float32), allow_pickle=False)  # np.save keeps a name ending .npy
        seen_while_writing.append(dest.read_bytes())

    assert save_atomically(dest, write, "the array") is True
    assert seen_while_writing == [b"old"]
    assert np.array_equal(np.load(dest), np.arange(4, dtype=np.float32))
    assert [p.name for p in tmp_path.iterdir()] == ["reference.npy"]  # no temporary file left


def test_a_failed_write_keeps_the_old_file_leaves_nothing_behind_and_says_why(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    dest = tmp_path / "engine.ep"
    dest.write_bytes(b"old")

    def write(tmp: Path) -> None:
        tmp.write_bytes(b"half")
        raise RuntimeError("serializer failed\nand a page of details")

    with caplog.at_level(logging.WARNING):
        assert save_atomically(dest, write, "the TensorRT engine") is False
    assert dest.read_bytes() == b"old" and [p.name for p in tmp_path.iterdir()] == ["engine.ep"]
    assert f"could not save the TensorRT engine to {dest}: serializer failed" in caplog.text
    assert "page of details" not in caplog.text


def test_a_folder_that_cannot_be_made_is_a_warning_not_an_error(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    (tmp_path / "models").write_text("a file where the model folder should be")
    with caplog.at_level(logging.WARNING):
        assert save_atomically(tmp_path / "models" / "compiled" / "build.json", lambda t: t.write_text("{}"),
                               "the build record") is False
    assert "could not save the build record" in caplog.text
