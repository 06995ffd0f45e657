"""``photoenhance up`` (what ``make run`` starts): the whole service on embedded defaults, one command."""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from minio import Minio
from minio.error import S3Error
from PIL import Image

from bus.connection import REFUSED_EXIT
from photoenhance.credentials import load_env_file
from photoenhance.servers import ADMIN_ENV_FILE, free_port

from .support import ROOT, encode, photo, wait_until


@dataclass
class Up:
    proc: subprocess.Popen[bytes]
    url: str
    var: Path
    log_path: Path

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")


@pytest.fixture(scope="module")
def up(tmp_path_factory: pytest.TempPathFactory, model_dir: Path) -> Iterator[Up]:
    """``photoenhance up`` as ``make run`` starts it, shared by the tests below (the last one stops it)."""
    tmp_path = tmp_path_factory.mktemp("up")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "S3_"))}
    # Warm-up and compile off, as on every test stack (tests/support TEST_ENV): tests/test_enhancer_start.py checks
    # the warm-up, tests/enhancer/test_openvino.py the compile (an enhancer process converting a model for real).
    env |= {"MODEL_DIR": str(model_dir), "PYTHONUNBUFFERED": "1", "ENHANCER_HEARTBEAT": "1", "ENHANCER_WARM_UP": "off",
            "ENHANCER_COMPILE": "off"}
    log = (tmp_path / "up.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "photoenhance", "up", "--port", str(port),
                             "--data-dir", str(tmp_path / "var")], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT)
    running = Up(proc, f"http://127.0.0.1:{port}", tmp_path / "var", tmp_path / "up.log")

    def healthy() -> bool:
        assert proc.poll() is None, running.log()[-3000:]
        return httpx.get(f"{running.url}/api/v1/health", timeout=2).json()["status"] == "healthy"

    try:
        wait_until(healthy, 180, "photoenhance up to be healthy", interval=0.5)
        yield running
    finally:
        if proc.poll() is None:  # a test failed before the last one stopped it: stop it as Ctrl-C does
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(90)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()


def test_up_serves_and_enhances(up: Up) -> None:
    r = httpx.post(f"{up.url}/api/v1/enhance?quality_level=fast&scale=2",
                   files={"file": ("p.jpg", encode(photo(size=(24, 24))), "image/jpeg")})
    task_id = r.json()["task_id"]
    wait_until(lambda: httpx.get(f"{up.url}/api/v1/status/{task_id}").json()["status"] == "completed", 120,
               "the task to complete")
    out = Image.open(io.BytesIO(httpx.get(f"{up.url}/api/v1/download/{task_id}").content))
    assert out.size == (48, 48)


def _cli(*args: str, cwd: Path = ROOT) -> str:
    proc = subprocess.run([sys.executable, "-m", "photoenhance", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, check=False)
    assert proc.returncode == 0, proc.stderr
    return proc.stdout


def _listed(url: str, name: str) -> dict[str, Any] | None:
    info = httpx.get(f"{url}/api/v1/info", timeout=5).json()
    return next((e for e in info["enhancers"] if e["id"] == name), None)


def test_a_gpu_host_joins_with_its_env_file_and_is_cut_off_by_revoke(up: Up, tmp_path: Path, model_dir: Path) -> None:
    """README "Adding a GPU host": mint, copy the files over, join with --env-file alone; then revoke."""
    issued = tmp_path / "issued"
    issued.mkdir()
    _cli("credentials", "create", "enhancer", "gpu-2", "--out", str(issued / "gpu-2.env"),
         "--identity", str(up.var / "identity"))
    host = tmp_path / "other-machine"  # what the operator copies to the GPU host: these three files
    shutil.copytree(issued, host)
    assert sorted(p.name for p in host.iterdir()) == ["ca.pem", "gpu-2.creds", "gpu-2.env"]
    settings = load_env_file(host / "gpu-2.env")
    root = (up.var / "s3" / ADMIN_ENV_FILE).read_text()
    assert settings["S3_ACCESS_KEY"] and settings["S3_ACCESS_KEY"] not in root  # its own S3 keys, not root's
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("NATS_", "S3_", "ENHANCER_"))}
    log_path = tmp_path / "gpu-2.log"
    with log_path.open("wb") as log:
        worker = subprocess.Popen([sys.executable, "-m", "photoenhance", "enhancer", "--env-file", "gpu-2.env"],
                                  cwd=host, stdout=log, stderr=subprocess.STDOUT,
                                  env={**clean, "MODEL_DIR": str(model_dir), "ENHANCER_HEARTBEAT": "1",
                                       "ENHANCER_WARM_UP": "off", "PYTHONUNBUFFERED": "1"})
    try:
        wait_until(lambda: (_listed(up.url, "gpu-2") or {}).get("status") == "healthy", 120,
                   f"gpu-2 to join ({log_path.read_text()[-2000:]})")
        _cli("credentials", "revoke", "gpu-2", "--identity", str(up.var / "identity"))
        # Cut off: its heartbeats stop reaching the bus (it can no longer connect), and its S3 keys are void.
        wait_until(lambda: (_listed(up.url, "gpu-2") or {}).get("status") != "healthy", 30, "gpu-2 to be cut off")
        store = Minio(settings["S3_ENDPOINT"].removeprefix("http://"), access_key=settings["S3_ACCESS_KEY"],
                      secret_key=settings["S3_SECRET_KEY"], secure=False, region="us-east-1")
        with pytest.raises(S3Error):
            store.get_object(settings["S3_BUCKET"], "inputs/any/photo.jpg")
        # The worker says why it stops, and stops with the status that tells a supervisor not to start it again
        # (nothing it could do would work again).
        assert worker.wait(60) == REFUSED_EXIT and "refused this credential (revoked?)" in log_path.read_text()
        listed = _cli("credentials", "list", "--identity", str(up.var / "identity"))
        assert any(line.split()[:3] == ["gpu-2", "enhancer", "revoked"] for line in listed.splitlines())
        # The local enhancer, on the same bus, was not touched.
        assert (_listed(up.url, "local-enhancer") or {}).get("status") == "healthy"
    finally:
        worker.kill()
        worker.wait(10)


def test_up_stops_cleanly_on_ctrl_c(up: Up) -> None:
    up.proc.send_signal(signal.SIGINT)
    code = up.proc.wait(90)
    text = up.log()
    assert code == 0, text[-3000:]
    assert "PhotoEnhanceAI is running" in text
    # Data lives under the chosen folder, and every child (servers included) is gone.
    assert (up.var / "nats" / "jetstream").is_dir() and (up.var / "s3").is_dir()
    assert processes_mentioning(str(up.var)) == []


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
