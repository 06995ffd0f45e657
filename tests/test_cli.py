"""``photoenhance enhance``: what a person runs on a folder of photos."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from photoenhance import cli
from photoenhance.servers import free_port

from .support import ROOT, Stack, encode, photo


def run_cli(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "photoenhance", "enhance", *args, "--server", stack.url],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def test_cli_enhances_two_files(stack: Stack, tmp_path: Path) -> None:
    (tmp_path / "cat.jpg").write_bytes(encode(photo("chelsea", size=(40, 30))))
    (tmp_path / "cup.png").write_bytes(encode(photo("coffee", size=(36, 24)), "PNG"))
    out = tmp_path / "out"
    done = run_cli(stack, str(tmp_path / "cat.jpg"), str(tmp_path / "cup.png"), "--out", str(out),
                   "--scale", "2", "--quality", "fast")
    assert done.returncode == 0, done.stderr
    assert Image.open(out / "cat_enhanced.jpg").size == (80, 60)
    assert Image.open(out / "cup_enhanced.png").size == (72, 48)
    assert "cat_enhanced.jpg" in done.stdout and "cup_enhanced.png" in done.stdout


def test_cli_reports_a_refused_file_and_goes_on(stack: Stack, tmp_path: Path) -> None:
    (tmp_path / "good.jpg").write_bytes(encode(photo(size=(32, 24))))
    (tmp_path / "bad.jpg").write_bytes(b"not a photo at all")
    out = tmp_path / "out"
    done = run_cli(stack, str(tmp_path / "bad.jpg"), str(tmp_path / "good.jpg"), "--out", str(out),
                   "--quality", "fast", "--scale", "2")
    assert done.returncode == 1
    assert "bad.jpg: HTTP 400: The file is not an image we can read." in done.stderr
    assert (out / "good_enhanced.jpg").exists() and not (out / "bad_enhanced.jpg").exists()


def test_cli_writes_the_format_asked(stack: Stack, tmp_path: Path) -> None:
    (tmp_path / "cat.jpg").write_bytes(encode(photo("chelsea", size=(40, 30))))
    out = tmp_path / "out"
    done = run_cli(stack, str(tmp_path / "cat.jpg"), "--out", str(out), "--scale", "2", "--quality", "fast",
                   "--output-format", "webp", "--output-quality", "80")
    assert done.returncode == 0, done.stderr
    with Image.open(out / "cat_enhanced.webp") as img:
        assert img.format == "WEBP" and img.size == (80, 60)


def test_with_nothing_at_the_address_both_commands_say_where_they_looked_once(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    """`make run` may serve on another port (PORT=8010): a client pointed at the wrong one says so in one line,
    not with a traceback (`servers`) or one failure per photo (`enhance`)."""
    nowhere = f"http://127.0.0.1:{free_port()}"  # nobody listens there
    monkeypatch.setenv("PHOTOENHANCE_URL", nowhere)
    monkeypatch.setenv("ADMIN_TOKEN", "whatever")
    photos = []
    for name in ("a.jpg", "b.jpg"):
        (tmp_path / name).write_bytes(encode(photo(size=(16, 16))))
        photos.append(str(tmp_path / name))
    for argv in (["enhance", *photos, "--out", str(tmp_path / "out")], ["servers"]):
        with pytest.raises(SystemExit) as exited:
            cli.main(argv)
        assert exited.value.code == 2
        err = capsys.readouterr().err
        assert err.count(f"cannot reach the service at {nowhere}") == 1, err
        assert "--server URL or PHOTOENHANCE_URL" in err and "Traceback" not in err
