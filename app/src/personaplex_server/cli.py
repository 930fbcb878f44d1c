"""``personaplex-server``: serve, client, bench (server | engine), make-tiny-model."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from pydantic import ValidationError

from . import __version__
from .auth import RedactTokenFilter
from .config import add_settings_arguments, settings_from_args


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    handler.addFilter(RedactTokenFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True


def cmd_serve(args: argparse.Namespace) -> int:
    import uvicorn

    from .app import create_app
    from .uvicorn_server import Server, uvicorn_kwargs

    try:
        settings = settings_from_args(args)
    except ValidationError as exc:
        print(f"invalid settings:\n{exc}", file=sys.stderr)
        return 2
    setup_logging(settings.log_level)
    exit_code = 0
    server: Server | None = None

    def on_load_failure(exc: BaseException) -> None:
        nonlocal exit_code
        exit_code = 3
        if server is not None:
            server.should_exit = True

    app = create_app(settings, on_load_failure=on_load_failure)
    config = uvicorn.Config(app, **uvicorn_kwargs(settings))  # type: ignore[arg-type]
    server = Server(config)
    server.run()
    if exit_code:
        logging.getLogger(__name__).error("exiting: the model could not be loaded (see above)")
    return exit_code


def cmd_client(args: argparse.Namespace) -> int:
    from . import client

    return client.main(args)


def cmd_bench_server(args: argparse.Namespace) -> int:
    from . import bench_server

    return bench_server.main(args)


def cmd_bench_engine(args: argparse.Namespace) -> int:
    from . import bench_engine

    result = bench_engine.run_engine_bench(args.engine_args)
    return int(result) if isinstance(result, int) else 0


def cmd_make_tiny_model(args: argparse.Namespace) -> int:
    from . import tiny

    out = tiny.generate(args.out_dir, args.seed)
    print(f"tiny model written to {out if out is not None else args.out_dir}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    # allow_abbrev=False everywhere: "--token" must not silently mean "--token-file".
    parser = argparse.ArgumentParser(
        prog="personaplex-server",
        description="PersonaPlex real-time voice server",
        allow_abbrev=False,
    )
    parser.add_argument("--version", action="version", version=__version__)
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the voice server", allow_abbrev=False)
    add_settings_arguments(serve)
    serve.set_defaults(func=cmd_serve)

    from . import client

    cl = sub.add_parser(
        "client",
        help="stream a WAV file through a server (smoke/load test)",
        allow_abbrev=False,
    )
    client.add_arguments(cl)
    cl.set_defaults(func=cmd_client)

    bench = sub.add_parser("bench", help="benchmarks (print numbers; not pass/fail tests)")
    bench_sub = bench.add_subparsers(dest="bench", required=True)
    bs = bench_sub.add_parser(
        "server", help="server overhead per frame per stream", allow_abbrev=False
    )
    from . import bench_server

    bench_server.add_arguments(bs)
    bs.set_defaults(func=cmd_bench_server)
    be = bench_sub.add_parser(
        "engine",
        help="model step time, real-time factor, memory (engine bench; --help for its flags)",
        add_help=False,  # --help goes to the engine bench's own parser
        prefix_chars="\0",  # every argument, flags included, is passed through verbatim
    )
    be.add_argument("engine_args", nargs=argparse.REMAINDER, help="passed to the engine bench")
    be.set_defaults(func=cmd_bench_engine)

    tiny = sub.add_parser("make-tiny-model", help="write a tiny random PersonaPlex-shaped model")
    tiny.add_argument("out_dir", type=Path)
    tiny.add_argument("--seed", type=int, default=0)
    tiny.set_defaults(func=cmd_make_tiny_model)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    code: int = args.func(args)
    return code
