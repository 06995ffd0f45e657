"""``photoenhance enhance``: send a folder's worth of photos through a running service.

Each photo is uploaded, followed (its own progress bar, driven by the stages the enhancer
reports) and downloaded as ``<stem>_enhanced.<ext>`` into the output folder. A photo the
service refuses is reported with the service's own message; the others go on.
"""

from __future__ import annotations

import asyncio
import re
import sys
from email.message import Message
from pathlib import Path
from urllib.parse import unquote

import httpx
from tqdm import tqdm

POLL_INTERVAL = 0.5


class ServiceError(RuntimeError):
    pass


def unreachable(server: str, exc: httpx.TransportError) -> str:
    """What a person is told when nothing answers at ``server``: where we looked, and how to look elsewhere."""
    return (f"cannot reach the service at {server} ({str(exc) or type(exc).__name__}). Is it running? Give its "
            "address with --server URL or PHOTOENHANCE_URL")


def _error(resp: httpx.Response) -> ServiceError:
    try:
        message = resp.json().get("error") or resp.text
    except ValueError:
        message = resp.text[:200]
    return ServiceError(f"HTTP {resp.status_code}: {message}")


def _filename(resp: httpx.Response, fallback: str) -> str:
    msg = Message()
    msg["content-disposition"] = resp.headers.get("content-disposition", "")
    star = re.search(r"filename\*=UTF-8''([^;]+)", msg["content-disposition"] or "")
    name = unquote(star.group(1)) if star else (msg.get_param("filename", header="content-disposition") or fallback)
    return Path(str(name)).name or fallback


async def _one(client: httpx.AsyncClient, path: Path, out_dir: Path, params: dict[str, str], position: int,
               limit: asyncio.Semaphore) -> Path:
    async with limit:
        bar = tqdm(total=100, desc=path.name[:30], position=position, leave=True, unit="%",
                   bar_format="{desc:<30} {percentage:3.0f}%|{bar}| {postfix}")
        try:
            while True:  # a busy service answers 429 with Retry-After: wait as told, then send again
                with path.open("rb") as fh:
                    resp = await client.post("/api/v1/enhance", files={"file": (path.name, fh)}, data=params)
                if resp.status_code != 429:
                    break
                await asyncio.sleep(float(resp.headers.get("retry-after", "2")))
            if resp.status_code != 200:
                raise _error(resp)
            task_id = resp.json()["task_id"]
            while True:
                st = await client.get(f"/api/v1/status/{task_id}")
                if st.status_code != 200:
                    raise _error(st)
                body = st.json()
                bar.n = round(100 * (body.get("progress") or 0))
                bar.set_postfix_str(body.get("message") or body["status"])
                if body["status"] == "completed":
                    break
                if body["status"] == "failed":
                    raise ServiceError(body.get("error") or "enhancement failed")
                await asyncio.sleep(POLL_INTERVAL)
            dl = await client.get(f"/api/v1/download/{task_id}")
            if dl.status_code != 200:
                raise _error(dl)
            target = out_dir / _filename(dl, f"{path.stem}_enhanced{path.suffix}")
            target.write_bytes(dl.content)
            bar.n = 100
            bar.set_postfix_str(f"saved {target.name}")
            return target
        finally:
            bar.refresh()
            bar.close()


async def _run(files: list[Path], out_dir: Path, server: str, params: dict[str, str], parallel: int) -> int:
    limit = asyncio.Semaphore(max(1, parallel))
    async with httpx.AsyncClient(base_url=server, timeout=httpx.Timeout(60.0, connect=10.0)) as client:
        try:  # one line if nothing answers there, not one failure per photo
            await client.get("/api/v1/health")
        except httpx.TransportError as e:
            print(f"error: {unreachable(server, e)}", file=sys.stderr)
            return 2
        results = await asyncio.gather(*(_one(client, f, out_dir, params, i, limit) for i, f in enumerate(files)),
                                       return_exceptions=True)
    failures = 0
    for path, result in zip(files, results, strict=True):
        if isinstance(result, BaseException):
            failures += 1
            reason = str(result) if isinstance(result, ServiceError | httpx.HTTPError | OSError) else repr(result)
            print(f"✗ {path}: {reason}", file=sys.stderr)
        else:
            print(f"✓ {path} → {result}")
    return 1 if failures else 0


def enhance_files(files: list[str], *, out_dir: Path, server: str, scale: int = 4, quality: str | None = None,
                  tile_size: int = 400, face_enhance: str = "auto", parallel: int = 4,
                  face_strength: float | None = None, output_format: str | None = None,
                  output_quality: int | None = None) -> int:
    """Enhance ``files`` into ``out_dir``; exit code 0 when every photo succeeded."""
    paths = [Path(f) for f in files]
    missing = [p for p in paths if not p.is_file()]
    if missing:
        print(f"not a file: {', '.join(map(str, missing))}", file=sys.stderr)
        return 2
    out_dir.mkdir(parents=True, exist_ok=True)
    params = {"scale": str(scale), "tile_size": str(tile_size), "face_enhance": face_enhance}
    # What is not given is the service's choice (its default quality suits its fleet: fast on CPUs).
    given = {"quality_level": quality, "face_strength": face_strength, "output_format": output_format,
             "output_quality": output_quality}
    params |= {name: str(value) for name, value in given.items() if value is not None}
    return asyncio.run(_run(paths, out_dir, server.rstrip("/"), params, parallel))
