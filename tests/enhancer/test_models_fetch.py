"""Fetching the official weights (``enhancer.weights.fetch`` / ``ensure``) from a local HTTP server.

In-process and quick: a ``http.server`` in a thread serves small files with or without ``Range`` support and can
cut a body short, so the SHA-256 check, the resumable ``.part`` and the start-up behaviour (fetch what is missing,
say once what is not there, never stop the start) are exercised with real HTTP and nothing leaves the machine.
"""

from __future__ import annotations

import hashlib
import io
import re
import socket
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import SimpleNamespace

import pytest

from enhancer import weights
from enhancer.weights import ProgressBar, WeightFile, WeightsError, WeightsUnreachable

BODY = bytes(range(256)) * 4096  # 1 MiB
DIGEST = hashlib.sha256(BODY).hexdigest()


@dataclass
class Server:
    """Serves ``files`` by name; records each request's path and Range header."""

    files: dict[str, bytes]
    honour_range: bool = True
    #: Cut the body of the next N responses after this many bytes (the connection closes mid-body).
    cut_after: int | None = None
    cuts_left: int = 0
    #: Seconds to wait before sending a body (to hold a download open while another fetcher waits).
    delay: float = 0.0
    requests: list[tuple[str, str | None]] = field(default_factory=list)
    base: str = ""

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"


@pytest.fixture
def server() -> Iterator[Server]:
    state = Server(files={})

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            name = self.path.lstrip("/")
            asked = self.headers.get("Range")
            state.requests.append((name, asked))
            body = state.files.get(name)
            if body is None:
                self.send_error(404)
                return
            start = 0
            match = re.fullmatch(r"bytes=(\d+)-", asked or "")
            if match and state.honour_range:
                start = int(match[1])
                if start >= len(body):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(body)}")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(206)
                self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
            else:
                self.send_response(200)
            rest = body[start:]
            self.send_header("Content-Length", str(len(rest)))
            self.end_headers()
            time.sleep(state.delay)
            if state.cut_after is not None and state.cuts_left > 0:
                state.cuts_left -= 1
                self.wfile.write(rest[: state.cut_after])
                self.wfile.flush()
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            self.wfile.write(rest)

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    state.base = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()


def catalogue(monkeypatch: pytest.MonkeyPatch, *entries: WeightFile) -> None:
    monkeypatch.setattr(weights, "CATALOGUE", {e.filename: e for e in entries})


def entry(server: Server, name: str = "w.pth", body: bytes = BODY, sha256: str | None = DIGEST,
          auto: bool = True) -> WeightFile:
    server.files[name] = body
    return WeightFile(name, server.url(name), sha256, f"test file {name}", auto=auto, without=f"no {name}")


def test_right_digest_puts_the_file_in_place(server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    catalogue(monkeypatch, entry(server))
    seen: list[tuple[str, int, int | None]] = []
    [path] = weights.fetch(tmp_path, ["w.pth"], lambda *a: seen.append(a))
    assert path == tmp_path / "w.pth" and path.read_bytes() == BODY
    assert [p.name for p in tmp_path.iterdir()] == ["w.pth"]  # no .part left
    assert seen[-1] == ("w.pth", len(BODY), len(BODY))
    assert server.requests == [("w.pth", None)]

    weights.fetch(tmp_path, ["w.pth"])  # already there with the right digest: no request
    assert len(server.requests) == 1


def test_wrong_digest_is_refused_and_nothing_is_left(server: Server, tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    catalogue(monkeypatch, entry(server, sha256="0" * 64))
    with pytest.raises(WeightsError, match=r"w\.pth: SHA-256 mismatch \(got [0-9a-f]{64}, expected 0{64}\).*"
                                           r"nothing was put in place"):
        weights.fetch(tmp_path, ["w.pth"])
    assert list(tmp_path.iterdir()) == []


def test_interrupted_download_keeps_the_part_and_the_next_fetch_resumes(
        server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    catalogue(monkeypatch, entry(server))
    server.cut_after, server.cuts_left = 300_000, 1
    with pytest.raises(WeightsError, match=r"interrupted after 300000 of 1048576 bytes.*kept in w\.pth\.part"):
        weights.fetch(tmp_path, ["w.pth"], retries=0)
    part = tmp_path / "w.pth.part"
    assert part.read_bytes() == BODY[:300_000]
    assert not (tmp_path / "w.pth").exists()  # never a partial file under the real name

    seen: list[int] = []
    weights.fetch(tmp_path, ["w.pth"], lambda _n, done, _t: seen.append(done))
    assert server.requests == [("w.pth", None), ("w.pth", "bytes=300000-")]
    assert (tmp_path / "w.pth").read_bytes() == BODY and not part.exists()
    assert seen[0] > 300_000 and seen[-1] == len(BODY)  # progress counts from where it resumed


def test_one_fetch_resumes_by_itself_after_a_cut(server: Server, tmp_path: Path,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    catalogue(monkeypatch, entry(server))
    server.cut_after, server.cuts_left = 100_000, 2
    weights.fetch(tmp_path, ["w.pth"], retries=3)
    assert [r for _, r in server.requests] == [None, "bytes=100000-", "bytes=200000-"]
    assert (tmp_path / "w.pth").read_bytes() == BODY


def test_a_server_that_ignores_range_restarts_from_zero(server: Server, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    catalogue(monkeypatch, entry(server))
    server.honour_range = False
    (tmp_path / "w.pth.part").write_bytes(b"\xff" * 5000)  # would corrupt the file if appended to
    weights.fetch(tmp_path, ["w.pth"])
    assert server.requests == [("w.pth", "bytes=5000-")]
    assert (tmp_path / "w.pth").read_bytes() == BODY


def test_a_part_longer_than_the_file_starts_again(server: Server, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    catalogue(monkeypatch, entry(server))
    (tmp_path / "w.pth.part").write_bytes(b"\0" * (len(BODY) + 10))
    weights.fetch(tmp_path, ["w.pth"])
    assert [r for _, r in server.requests] == [f"bytes={len(BODY) + 10}-", None]  # 416, then from zero
    assert (tmp_path / "w.pth").read_bytes() == BODY


def test_a_resumed_download_with_a_foreign_prefix_is_refused_by_its_digest(
        server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    catalogue(monkeypatch, entry(server))
    (tmp_path / "w.pth.part").write_bytes(b"\xff" * 5000)  # not this file's first bytes
    with pytest.raises(WeightsError, match="SHA-256 mismatch"):
        weights.fetch(tmp_path, ["w.pth"])
    assert list(tmp_path.iterdir()) == []  # deleted: the next fetch starts clean
    weights.fetch(tmp_path, ["w.pth"])
    assert (tmp_path / "w.pth").read_bytes() == BODY


def test_two_fetchers_of_one_file_take_turns(server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Compose replicas, or `up` and the CLI, sharing a model folder: one downloads, the other waits and finds it."""
    catalogue(monkeypatch, entry(server))
    server.delay = 0.3
    errors: list[BaseException] = []

    def run() -> None:
        try:
            weights.fetch(tmp_path, ["w.pth"])
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    assert not errors
    assert len(server.requests) == 1
    assert [p.name for p in tmp_path.iterdir()] == ["w.pth"] and (tmp_path / "w.pth").read_bytes() == BODY


def test_an_unreachable_server_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    catalogue(monkeypatch, WeightFile("w.pth", f"http://127.0.0.1:{port}/w.pth", DIGEST, "test"))
    with pytest.raises(WeightsUnreachable, match=r"Could not download w\.pth: no connection to 127\.0\.0\.1"):
        weights.fetch(tmp_path, ["w.pth"], timeout=2)
    assert list(tmp_path.iterdir()) == []


def test_a_file_without_published_hash_is_stored_and_said_to_be_unverified(
        server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    catalogue(monkeypatch, entry(server, "det.pth", b"detector", sha256=None))
    notes: list[str] = []
    weights.fetch(tmp_path, None, warn=notes.append)
    assert (tmp_path / "det.pth").read_bytes() == b"detector"
    assert notes == [f"det.pth: upstream publishes no SHA-256, so it was stored without verification (8 bytes from "
                     f"{server.url('det.pth')})."]


def test_the_catalogue_pins_the_published_digests() -> None:
    c = weights.CATALOGUE
    assert {n: w.sha256 for n, w in c.items() if w.sha256} == {
        "GFPGANv1.4.pth": "e2cd4703ab14f4d01fd1383a8a8b266f9a5833dacee8e6a79d3bf21a1b6be5ad",
        "RealESRGAN_x2plus.pth": "49fafd45f8fd7aa8d31ab2a22d14d91b536c34494a5cfe31eb5d89c2fa266abb",
        "RealESRGAN_x4plus.pth": "4fa0d38905f75ac06eb49a7951b426670021be3018265fd191d2125df9d682f1",
        "realesr-general-x4v3.pth": "8dc7edb9ac80ccdc30c3a5dca6616509367f05fbc184ad95b731f05bece96292",
    }
    # facexlib publishes no hash for its detection and parsing weights: none is pretended.
    assert c["detection_Resnet50_Final.pth"].sha256 is None and c["parsing_parsenet.pth"].sha256 is None
    assert all(w.url.startswith("https://github.com/") for w in c.values())
    # Fetched at start: what the service uses (the parsing net is not: faces are pasted with a feathered square).
    assert [w.filename for w in c.values() if w.auto] == [
        "GFPGANv1.4.pth", "realesr-general-x4v3.pth", "RealESRGAN_x2plus.pth", "RealESRGAN_x4plus.pth",
        "detection_Resnet50_Final.pth"]


# ----------------------------------------------------------------------------------------------------------
# ensure(): what `photoenhance up` and compose's `models` step run at start
# ----------------------------------------------------------------------------------------------------------


def test_ensure_fetches_what_is_missing_from_a_mirror(server: Server, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    catalogue(monkeypatch, entry(server, "a.pth"), entry(server, "b.pth", b"b" * 10, sha256=None),
              entry(server, "optional.pth", auto=False))
    (tmp_path / "a.pth").write_bytes(b"copied in by hand")  # present: not fetched, not hashed at start
    out = io.StringIO()
    still = weights.ensure(tmp_path, env={"MODELS_MIRROR": server.base + "/"}, out=out)
    assert still == []
    assert server.requests == [("b.pth", None)]
    text = out.getvalue()
    assert "Fetching 1 model weights file into" in text and "ok: b.pth" in text
    assert "stored without verification" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pth", "b.pth"]

    out = io.StringIO()
    assert weights.ensure(tmp_path, env={"MODELS_MIRROR": server.base}, out=out) == []
    assert out.getvalue() == "" and len(server.requests) == 1  # all there: silent, no network


def test_ensure_with_fetch_off_reaches_nothing_and_says_what_is_missing(
        server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    catalogue(monkeypatch, entry(server, "a.pth"), entry(server, "optional.pth", auto=False))
    out = io.StringIO()
    still = weights.ensure(tmp_path, env={"MODELS_FETCH": "off", "MODELS_MIRROR": server.base}, out=out)
    assert [w.filename for w in still] == ["a.pth"]
    assert server.requests == []
    text = out.getvalue()
    assert text.startswith(f"Model weights missing from {tmp_path} (MODELS_FETCH=off: not downloading):")
    assert "  - a.pth: no a.pth" in text and "optional.pth" not in text
    assert "`photoenhance models fetch`" in text and f"copy the files from another machine's model folder into " \
                                                     f"{tmp_path}" in text


def test_ensure_offline_is_quick_and_says_it_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    catalogue(monkeypatch, WeightFile("a.pth", "https://github.com/x/a.pth", DIGEST, "A", without="no A"),
              WeightFile("b.pth", "https://github.com/x/b.pth", DIGEST, "B", without="no B"))
    out = io.StringIO()
    started = time.monotonic()
    still = weights.ensure(tmp_path, env={"MODELS_MIRROR": f"http://127.0.0.1:{port}"}, out=out, connect_timeout=2)
    assert time.monotonic() - started < 3
    assert [w.filename for w in still] == ["a.pth", "b.pth"]
    text = out.getvalue()
    assert text.count("Model weights missing") == 1 and "offline? could not reach 127.0.0.1" in text
    assert "no A" in text and "no B" in text and list(tmp_path.iterdir()) == []


def test_ensure_never_fails_the_start(server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A bad file is refused and said; the others still arrive; what is missing is said once at the end."""
    catalogue(monkeypatch, entry(server, "bad.pth", sha256="0" * 64), entry(server, "good.pth"))
    out = io.StringIO()
    still = weights.ensure(tmp_path, env={"MODELS_MIRROR": server.base}, out=out)
    assert [w.filename for w in still] == ["bad.pth"]
    text = out.getvalue()
    assert "bad.pth: SHA-256 mismatch" in text and "ok: good.pth" in text
    assert text.count("Model weights missing") == 1 and "(the fetch did not finish)" in text
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.pth"]


def test_a_model_folder_that_cannot_be_written_does_not_stop_the_start(
        server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    catalogue(monkeypatch, entry(server))
    blocked = tmp_path / "not-a-folder"
    blocked.write_bytes(b"")
    with pytest.raises(WeightsError, match="Cannot create the model folder"):
        weights.fetch(blocked / "models", ["w.pth"])
    out = io.StringIO()
    still = weights.ensure(blocked / "models", env={"MODELS_MIRROR": server.base}, out=out)
    assert [w.filename for w in still] == ["w.pth"] and "Cannot create the model folder" in out.getvalue()


def test_fetch_is_on_unless_turned_off() -> None:
    assert weights.fetch_enabled({}) and weights.fetch_enabled({"MODELS_FETCH": "auto"})
    assert not any(weights.fetch_enabled({"MODELS_FETCH": v}) for v in ("off", "OFF", "0", "false", "no"))


# ----------------------------------------------------------------------------------------------------------
# The progress display
# ----------------------------------------------------------------------------------------------------------


def test_progress_is_a_bar_on_a_terminal_and_lines_elsewhere() -> None:
    tty = io.StringIO()
    bar = ProgressBar(tty, tty=True)
    bar("w.pth", 0, 1000)
    bar("w.pth", 1000, 1000)
    bar.end("ok: w.pth")
    text = tty.getvalue()
    assert text.startswith("\r  w.pth") and "[" + "#" * ProgressBar.WIDTH + "] 100%" in text
    assert text.endswith("\n  ok: w.pth\n")

    log = io.StringIO()
    lines = ProgressBar(log, tty=False)
    for done in range(0, 1001, 50):
        lines("w.pth", done, 1000)
    out = log.getvalue().splitlines()
    assert "\r" not in log.getvalue() and len(out) == 11  # every 10 %
    assert out[0].startswith("  w.pth: 0%") and out[-1].startswith("  w.pth: 100% 0.0/0.0 MB")


# ----------------------------------------------------------------------------------------------------------
# The commands: `photoenhance models fetch|ensure|list`, and who runs `ensure` at start
# ----------------------------------------------------------------------------------------------------------


def run_cli(*argv: str) -> int:
    from photoenhance import cli

    with pytest.raises(SystemExit) as exit_:
        cli.main(list(argv))
    return int(exit_.value.code or 0)


def test_models_fetch_command(server: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                              capsys: pytest.CaptureFixture[str]) -> None:
    catalogue(monkeypatch, entry(server, "a.pth"), entry(server, "bad.pth", sha256="0" * 64),
              entry(server, "optional.pth", auto=False))
    monkeypatch.setenv("MODELS_MIRROR", server.base)
    assert run_cli("models", "fetch", "--dir", str(tmp_path)) == 1  # bad.pth refused: a clear error, exit 1
    out, err = capsys.readouterr()
    assert f"ok: {tmp_path / 'a.pth'}" in out and "error: bad.pth: SHA-256 mismatch" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.pth"]  # the optional one only when named

    assert run_cli("models", "fetch", "optional.pth", "--dir", str(tmp_path)) == 0
    assert run_cli("models", "list", "--dir", str(tmp_path)) == 0
    listing = capsys.readouterr().out
    assert re.search(r"a\.pth\s+1\.0 MB", listing) and re.search(r"bad\.pth\s+missing", listing)
    assert f"folder: {tmp_path}" in listing and "quality fast   runs realesr-animevideov3 (fallback" in listing


def test_models_ensure_command_never_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("MODELS_FETCH", "off")
    assert run_cli("models", "ensure", "--dir", str(tmp_path)) == 0
    assert "Model weights missing" in capsys.readouterr().out


def test_who_fetches_at_start(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`photoenhance up` fetches before it starts anything and tells its enhancer so; an enhancer started on its
    own (compose, a GPU host) fetches itself; the test and benchmark stacks prepare their folder themselves."""
    from photoenhance import up
    from photoenhance.stack import Stack

    assert up._service_env(None, None, "enhancer", tmp_path)[weights.ENSURED_ENV] == "1"
    assert weights.ENSURED_ENV not in up._service_env(None, None, "edge", tmp_path)
    servers = SimpleNamespace(env_for=lambda name, role: {}, env=lambda role: {})
    stack = Stack(nats=servers, s3=servers, root=tmp_path, model_dir=tmp_path)  # type: ignore[arg-type]
    assert stack.env("enhancer")[weights.ENSURED_ENV] == "1"

    import enhancer.service as service

    calls: list[Path] = []
    monkeypatch.setattr(weights, "ensure", lambda model_dir: calls.append(model_dir))
    monkeypatch.setattr(service, "run_until_signal", lambda _serve: 0)
    monkeypatch.setattr(service, "leave", lambda code=0: None)  # the process exit that follows a drain
    monkeypatch.setenv("MODEL_DIR", str(tmp_path))
    monkeypatch.delenv(weights.ENSURED_ENV, raising=False)
    service.main()
    assert calls == [tmp_path]
    monkeypatch.setenv(weights.ENSURED_ENV, "1")
    service.main()
    assert calls == [tmp_path]
