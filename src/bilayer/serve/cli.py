"""``bilayer serve``: the web app on this machine (127.0.0.1 unless told otherwise)."""

from __future__ import annotations

import argparse
import sys

from ..runtime.cli import add_model_option


def cmd_serve(args: argparse.Namespace) -> int:
    from ..messages import UserError
    from ..outputs import Outputs

    Outputs().model("--model", args.model).check()
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port is {args.port}; expected a port from 0 to 65535.")
    if args.max_upload_mib <= 0:
        raise UserError(f"--max-upload-mib is {args.max_upload_mib:g}; expected a positive size.")
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise UserError("bilayer serve needs FastAPI and uvicorn (pip install 'bilayer[serve]').") from None
    from .app import serve

    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: serving on {args.host}: other machines can reach this app (it has no login)",
              file=sys.stderr)

    def ready(url: str) -> None:
        print(f"bilayer serve: open {url} (Ctrl-C stops)", flush=True)

    try:
        serve(args.model, args.host, args.port, max_upload_bytes=int(args.max_upload_mib * 2**20),
              backend=args.backend, on_ready=ready)
    except OSError as exc:
        raise UserError(f"cannot serve on {args.host}:{args.port}: {exc.strerror or exc}.") from None
    return 0


def configure_serve(p: argparse.ArgumentParser) -> None:
    from ..runtime.backends import BACKENDS

    add_model_option(p)
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=7860, help="port (default 7860; 0 picks a free one)")
    p.add_argument("--max-upload-mib", type=float, default=100, help="largest photo or video accepted (default 100 MiB)")
    p.add_argument("--backend", choices=["auto", *(b for b in BACKENDS if b != "fp16")], default="auto",
                   help="per-frame engine of the live tab (default auto: bf16 where native, else eager)")
    p.set_defaults(func=cmd_serve)
