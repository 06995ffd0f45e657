"""``photoenhance``: one command for every part of the system.

    photoenhance up                      everything on embedded defaults (NATS, S3, edge, enhancer, billing)
    photoenhance edge|enhancer|billing [--env-file FILE]   one service, configured by the environment
    photoenhance bootstrap               declare streams, consumers and buckets (admin credential)
    photoenhance credentials create enhancer NAME --out FILE | revoke NAME | list
    photoenhance billing replay          rebuild billing's ledger from the event stream
    photoenhance enhance FILE... --out DIR   enhance photos through a running service
    photoenhance servers [--watch]       the enhancers on the bus (admin token)
    photoenhance models fetch [NAME...]  download official model weights (resumable, SHA-256 checked)
    photoenhance models ensure|list      fetch what is missing if the network allows (never fails) | show them
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


def _apply_env_file(args: argparse.Namespace) -> None:
    if getattr(args, "env_file", None):
        from .credentials import load_env_file

        os.environ.update(load_env_file(Path(args.env_file)))


def _service(name: str, args: argparse.Namespace) -> int:
    _logging()
    _apply_env_file(args)
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


def _bootstrap(args: argparse.Namespace) -> int:
    _logging()
    _apply_env_file(args)
    from .bootstrap import main

    return main(Path(args.s3_identities) if args.s3_identities else None)


def _identity(args: argparse.Namespace):
    from .identity import Identity

    hosts = [h.strip() for h in (getattr(args, "tls_host", None) or os.environ.get("NATS_TLS_HOSTS", "")).split(",")]
    return Identity.open(Path(args.identity), tls_hosts=[h for h in hosts if h])


def _credentials(args: argparse.Namespace) -> int:
    from . import credentials
    from .identity import IdentityError

    try:
        identity = _identity(args)
        if args.action == "init":
            config = credentials.init(identity, Path(args.nats_dir), resolver_dir=Path(args.resolver_dir),
                                      tls_dir=Path(args.tls_dir) if args.tls_dir else None, enhancer=args.enhancer,
                                      cluster_tls=args.cluster_tls)
            print(f"trust root in {identity.directory}; server configuration {config}")
        elif args.action == "create":
            out = credentials.create(identity, args.role, args.name, Path(args.out), nats_url=args.nats_url,
                                     storage=credentials.storage_admin(identity), s3_endpoint=args.s3_endpoint)
            print(f"wrote {out} (and {args.name}.creds, ca.pem beside it). On the GPU host:\n"
                  f"  photoenhance enhancer --env-file {out.name}")
        elif args.action == "revoke":
            cred = credentials.revoke(identity, args.name, nats_url=args.nats_url,
                                      storage=credentials.storage_admin(identity))
            print(f"revoked {cred.name} ({cred.role}); the servers dropped it")
        else:
            for line in credentials.table(identity):
                print(line)
    except (IdentityError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


def _enhance(args: argparse.Namespace) -> int:
    from .client import enhance_files

    return enhance_files(args.files, out_dir=Path(args.out), server=args.server, scale=args.scale,
                         quality=args.quality, tile_size=args.tile_size, face_enhance=args.face_enhance,
                         parallel=args.parallel, face_strength=args.face_strength,
                         output_format=args.output_format, output_quality=args.output_quality)


def _servers(args: argparse.Namespace) -> int:
    from .servers_view import show

    return show(args.server, watch=args.watch, interval=args.interval, token_file=args.token_file)


def model_dir_of(given: str | None = None) -> Path:
    """``--dir``, else ``$MODEL_DIR``, else the enhancer's default: the folder every command and service shares."""
    from enhancer.settings import DEFAULT_MODEL_DIR

    return Path(given or os.environ.get("MODEL_DIR") or DEFAULT_MODEL_DIR).expanduser()


def _models(args: argparse.Namespace) -> int:
    from enhancer import weights

    model_dir = model_dir_of(args.dir)
    if args.action == "list":
        for entry in weights.CATALOGUE.values():
            path = model_dir / entry.filename
            state = f"{path.stat().st_size / 1e6:7.1f} MB" if path.is_file() else "missing"
            verify = "SHA-256 pinned" if entry.sha256 else "no published hash"
            use = "" if entry.auto else "; optional, fetched only when named"
            print(f"{entry.filename:<30} {state:>10}  {entry.purpose} ({verify}{use})")
        print(f"folder: {model_dir}")
        for quality, (model, fallback) in weights.quality_models(model_dir).items():
            print(f"quality {quality:<6} runs {model}" + (" (fallback: its own weights are missing)" * fallback))
        return 0
    if args.action == "ensure":
        weights.ensure(model_dir)
        return 0
    names = args.names or ([w.filename for w in weights.CATALOGUE.values()] if args.all else
                           [w.filename for w in weights.CATALOGUE.values() if w.auto])
    bar = weights.ProgressBar()
    mirror = os.environ.get(weights.MIRROR_ENV) or None
    failed = 0
    for name in names:
        try:
            [path] = weights.fetch(model_dir, [name], bar, warn=lambda m: print(f"  note: {m}"), mirror=mirror)
            bar.end(f"ok: {path}")
        except weights.WeightsError as e:
            bar.end()
            print(f"error: {e}", file=sys.stderr)
            failed += 1
            if isinstance(e, weights.WeightsUnreachable):
                break
    return 1 if failed else 0


#: Where ``enhance`` and ``servers`` look for the service unless told.
DEFAULT_SERVER = "http://127.0.0.1:8000"
SERVER_HELP = "the service's address (default $PHOTOENHANCE_URL, else http://127.0.0.1:8000; `make run` prints its own)"


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
        s.add_argument("--env-file", help="KEY=value settings (e.g. from `photoenhance credentials create`)")
        s.set_defaults(func=lambda a, n=name: _service(n, a))

    bs = sub.add_parser("bootstrap", help="declare streams, consumers and buckets with the admin credential")
    bs.add_argument("--env-file", help="KEY=value settings")
    bs.add_argument("--s3-identities", help="MinIO (compose): create the services' own S3 users and write each "
                                            "role's keys to DIR/<role>.env")
    bs.set_defaults(func=_bootstrap)

    identity_dir = os.environ.get("PE_IDENTITY_DIR", "var/identity")
    cr = sub.add_parser("credentials", help="credentials of GPU hosts and services: create, revoke, list")
    crsub = cr.add_subparsers(dest="action", required=True)
    ini = crsub.add_parser("init", help="create the trust root (keys, CA) and write a nats-server configuration")
    ini.add_argument("--nats-dir", required=True, help="where to write nats-server.conf and auth.conf")
    ini.add_argument("--resolver-dir", required=True, help="the server's account directory, as the server sees it")
    ini.add_argument("--tls-dir", help="the identity's tls/ folder as the server sees it (default: where it is)")
    ini.add_argument("--tls-host", help="extra names/addresses for the server certificate, comma-separated "
                                        "(default $NATS_TLS_HOSTS)")
    ini.add_argument("--enhancer", help="also keep a shared enhancer credential of this name (compose replicas)")
    ini.add_argument("--cluster-tls", action="store_true", help="mutual TLS on cluster routes (a NATS cluster)")
    create = crsub.add_parser("create", help="mint a credential and write its env file")
    create.add_argument("role", choices=("enhancer", "edge", "billing"))
    create.add_argument("name", help="who holds it (letters, digits, - and _), e.g. gpu-host-1")
    create.add_argument("--out", required=True, help="the env file to write (the .creds and ca.pem go beside it)")
    revoke = crsub.add_parser("revoke", help="cut a credential off the live bus")
    revoke.add_argument("name")
    lst = crsub.add_parser("list", help="every credential issued, active and revoked")
    for c in (ini, create, revoke, lst):
        c.add_argument("--identity", default=identity_dir, help=f"the trust root (default {identity_dir})")
    for c in (create, revoke):
        c.add_argument("--nats-url", help="the bus as that host reaches it (default: the running `up`'s)")
    create.add_argument("--s3-endpoint", help="the S3 server as that host reaches it (default: the running `up`'s)")
    cr.set_defaults(func=_credentials)

    en = sub.add_parser("enhance", help="enhance photos through a running service")
    en.add_argument("files", nargs="+", help="photos to enhance")
    en.add_argument("--out", required=True, help="folder for the results")
    en.add_argument("--server", default=os.environ.get("PHOTOENHANCE_URL", DEFAULT_SERVER), help=SERVER_HELP)
    en.add_argument("--scale", type=int, choices=(2, 4), default=4)
    en.add_argument("--quality", choices=("fast", "medium", "high"),
                    help="default: the service's (fast where every enhancer is a CPU, else high)")
    en.add_argument("--tile-size", type=int, default=400)
    en.add_argument("--face-enhance", choices=("auto", "true", "false"), default="auto")
    en.add_argument("--face-strength", type=float, help="0 (the original face) to 1 (fully restored); "
                                                        "default: the service's (0.7)")
    en.add_argument("--output-format", choices=("auto", "jpeg", "png", "webp", "avif"),
                    help="the results' format (default auto: PNG stays PNG, else JPEG)")
    en.add_argument("--output-quality", type=int, help="1-100 for jpeg, webp and avif (default 92)")
    en.add_argument("--parallel", type=int, default=4, help="photos in flight at once (default 4)")
    en.set_defaults(func=_enhance)

    sv = sub.add_parser("servers", help="the enhancers on the bus, as a table (admin token)")
    sv.add_argument("--server", default=os.environ.get("PHOTOENHANCE_URL", DEFAULT_SERVER), help=SERVER_HELP)
    sv.add_argument("--watch", action="store_true", help="refresh until Ctrl-C")
    sv.add_argument("--interval", type=float, default=2.0)
    sv.add_argument("--token-file", help="file holding the admin token (default $ADMIN_TOKEN, then var/admin-token)")
    sv.set_defaults(func=_servers)

    models = sub.add_parser("models", help="model weights")
    msub = models.add_subparsers(dest="action", required=True)
    fetch = msub.add_parser("fetch", help="download official weights (needs internet): resumable, SHA-256 checked")
    fetch.add_argument("names", nargs="*", help="which weights (default: those the service uses)")
    fetch.add_argument("--all", action="store_true", help="also the optional ones (facexlib's parsing net)")
    ensure = msub.add_parser("ensure", help="fetch the missing weights the service uses if the network allows; "
                                            "otherwise say what is missing (exit 0 either way; MODELS_FETCH=off: "
                                            "never download)")
    listing = msub.add_parser("list", help="which weights are in the model folder, and what each quality level runs")
    for c in (fetch, ensure, listing):
        c.add_argument("--dir", help="model folder (default $MODEL_DIR or ~/.cache/photoenhance/models)")
        c.set_defaults(func=_models)
    return p


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    sys.exit(args.func(args))
