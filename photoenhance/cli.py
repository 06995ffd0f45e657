"""``photoenhance``: one command for every part of the system.

    photoenhance up                      everything on embedded defaults (NATS, S3, edge, enhancer, billing)
    photoenhance edge|enhancer|billing   one service, configured by the environment
    photoenhance billing replay          rebuild billing's ledger from the event stream
    photoenhance enhance FILE... --out DIR   enhance photos through a running service
    photoenhance servers [--watch]       the enhancers on the bus (admin token)
    photoenhance models fetch            download official model weights (SHA-256 checked)
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path


def _logging() -> None:
    logging.basicConfig(level=os.environ.get("LOG_LEVEL", "INFO").upper(),
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def _up(args: argparse.Namespace) -> int:
    from .up import run_all

    return run_all(port=args.port, data_dir=Path(args.data_dir), host=args.host)


def _service(name: str, args: argparse.Namespace) -> int:
    _logging()
    if name == "edge":
        from edge import main
    elif name == "enhancer":
        from enhancer import main
    else:
        from billing import main as billing_main

        billing_main([args.action] if getattr(args, "action", "serve") == "replay" else [])
        return 0
    main()
    return 0


def _enhance(args: argparse.Namespace) -> int:
    from .client import enhance_files

    return enhance_files(args.files, out_dir=Path(args.out), server=args.server, scale=args.scale,
                         quality=args.quality, tile_size=args.tile_size, face_enhance=args.face_enhance,
                         parallel=args.parallel)


def _servers(args: argparse.Namespace) -> int:
    from .servers_view import show

    return show(args.server, watch=args.watch, interval=args.interval, token_file=args.token_file)


def _models(args: argparse.Namespace) -> int:
    from enhancer.settings import DEFAULT_MODEL_DIR
    from enhancer.weights import fetch

    model_dir = Path(args.dir or os.environ.get("MODEL_DIR") or DEFAULT_MODEL_DIR).expanduser()
    shown: dict[str, int] = {}

    def progress(name: str, done: int, total: int | None) -> None:
        step = done * 20 // total if total else done // (16 * 1024 * 1024)
        if shown.get(name) != step:
            shown[name] = step
            print(f"{name}: {done / 1e6:.0f} MB" + (f" of {total / 1e6:.0f} MB" if total else ""), flush=True)

    for path in fetch(model_dir, args.names or None, progress):
        print(f"ok: {path}")
    return 0


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="photoenhance", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)

    up = sub.add_parser("up", help="run everything locally on embedded defaults (Ctrl-C stops it)")
    up.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")), help="HTTP port (default 8000)")
    up.add_argument("--host", default=os.environ.get("EDGE_HOST", "127.0.0.1"), help="HTTP address")
    up.add_argument("--data-dir", default=os.environ.get("PE_DATA_DIR", "var"),
                    help="where the embedded servers keep their data (default ./var)")
    up.set_defaults(func=_up)

    for name, text in (("edge", "the HTTP edge"), ("enhancer", "an enhancer worker"),
                       ("billing", "the billing service")):
        s = sub.add_parser(name, help=f"run {text} (configured by the environment; see README)")
        if name == "billing":
            s.add_argument("action", nargs="?", choices=("serve", "replay"), default="serve",
                           help="replay: rebuild the ledger from the first event on the stream (billing stopped)")
        s.set_defaults(func=lambda a, n=name: _service(n, a))

    en = sub.add_parser("enhance", help="enhance photos through a running service")
    en.add_argument("files", nargs="+", help="photos to enhance")
    en.add_argument("--out", required=True, help="folder for the results")
    en.add_argument("--server", default=os.environ.get("PHOTOENHANCE_URL", "http://127.0.0.1:8000"))
    en.add_argument("--scale", type=int, choices=(2, 4), default=4)
    en.add_argument("--quality", choices=("fast", "medium", "high"), default="high")
    en.add_argument("--tile-size", type=int, default=400)
    en.add_argument("--face-enhance", choices=("auto", "true", "false"), default="auto")
    en.add_argument("--parallel", type=int, default=4, help="photos in flight at once (default 4)")
    en.set_defaults(func=_enhance)

    sv = sub.add_parser("servers", help="the enhancers on the bus, as a table (admin token)")
    sv.add_argument("--server", default=os.environ.get("PHOTOENHANCE_URL", "http://127.0.0.1:8000"))
    sv.add_argument("--watch", action="store_true", help="refresh until Ctrl-C")
    sv.add_argument("--interval", type=float, default=2.0)
    sv.add_argument("--token-file", help="file holding the admin token (default $ADMIN_TOKEN, then var/admin-token)")
    sv.set_defaults(func=_servers)

    models = sub.add_parser("models", help="model weights")
    msub = models.add_subparsers(dest="action", required=True)
    fetch = msub.add_parser("fetch", help="download official weights (needs internet), SHA-256 checked")
    fetch.add_argument("names", nargs="*", help="which weights (default: all)")
    fetch.add_argument("--dir", help="model folder (default $MODEL_DIR or ~/.cache/photoenhance/models)")
    fetch.set_defaults(func=_models)
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    sys.exit(args.func(args))
