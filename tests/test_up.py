"""``photoenhance up`` (what ``make run`` starts): the whole service on embedded defaults, one command."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
from PIL import Image

from photoenhance.servers import free_port

from .support import ROOT, encode, photo, wait_until


def test_up_serves_enhances_and_stops_cleanly_on_ctrl_c(tmp_path: Path, model_dir: Path) -> None:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "S3_"))}
    env |= {"MODEL_DIR": str(model_dir), "PYTHONUNBUFFERED": "1"}
    log = (tmp_path / "up.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "photoenhance", "up", "--port", str(port),
                             "--data-dir", str(tmp_path / "var")], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        def healthy() -> bool:
            assert proc.poll() is None, (tmp_path / "up.log").read_text()[-3000:]
            return httpx.get(f"{url}/api/v1/health", timeout=2).json()["status"] == "healthy"

        wait_until(healthy, 180, "photoenhance up to be healthy", interval=0.5)
        r = httpx.post(f"{url}/api/v1/enhance?quality_level=fast&scale=2",
                       files={"file": ("p.jpg", encode(photo(size=(24, 24))), "image/jpeg")})
        task_id = r.json()["task_id"]
        wait_until(lambda: httpx.get(f"{url}/api/v1/status/{task_id}").json()["status"] == "completed", 120,
                   "the task to complete")
        out = Image.open(io.BytesIO(httpx.get(f"{url}/api/v1/download/{task_id}").content))
        assert out.size == (48, 48)
    finally:
        proc.send_signal(signal.SIGINT)
        code = proc.wait(90)
        log.close()
    text = (tmp_path / "up.log").read_text()
    assert code == 0, text[-3000:]
    assert "PhotoEnhanceAI is running" in text
    # Data lives under the chosen folder, and every child (servers included) is gone.
    assert (tmp_path / "var" / "nats" / "jetstream").is_dir() and (tmp_path / "var" / "s3").is_dir()
    assert processes_mentioning(str(tmp_path / "var")) == []


def processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            args = cmdline.read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in args:
            found.append(args)
    return found


def test_servers_left_behind_by_a_killed_run_are_stopped_by_the_next(tmp_path: Path) -> None:
    """`make run` killed outright (SIGKILL: no clean-up) leaves its S3 and NATS servers running on
    var/; the next run must not fail on their locks: it stops them and starts its own."""
    from photoenhance.servers import EmbeddedNats, EmbeddedS3

    script = ("import sys, time; from pathlib import Path; from photoenhance.servers import EmbeddedNats, EmbeddedS3\n"
              "d = Path(sys.argv[1]); s3 = EmbeddedS3(d / 's3'); s3.start(); n = EmbeddedNats(d / 'nats'); n.start()\n"
              "print(s3.proc.pid, n.proc.pid, flush=True); time.sleep(600)\n")
    first = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        orphans = [int(pid) for pid in first.stdout.readline().split()]
    finally:
        first.kill()
        first.wait()
    assert len(orphans) == 2 and all(Path(f"/proc/{pid}").exists() for pid in orphans)

    with EmbeddedS3(tmp_path / "s3") as s3, EmbeddedNats(tmp_path / "nats") as nats:
        assert httpx.get(f"{s3.endpoint}/", timeout=5).status_code in (200, 403)
        assert nats.proc is not None and nats.proc.poll() is None
        wait_until(lambda: not any(Path(f"/proc/{pid}").exists() for pid in orphans), 15,
                   "the left-behind servers to be gone")
