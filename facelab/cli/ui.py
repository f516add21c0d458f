"""ui: the browser pages (faceset clean-up, training preview, interactive merger)."""

from __future__ import annotations

import argparse
import ipaddress
import secrets
import socket

from facelab.cli.argtypes import int_in
from facelab.cli.common import workspace_from
from facelab.errors import FacelabError, UsageError
from facelab.progress import say


def register(sub, common) -> None:
    p = sub.add_parser(
        "ui",
        parents=[common],
        help="the faceset, training and merge pages in the browser (local, or through an SSH tunnel)",
        description="Serve the workspace's faceset, training and merge pages. Binds 127.0.0.1 by default; "
        "another --host needs the token printed at start on every request.",
    )
    add_server_options(p)
    p.set_defaults(handler=cmd_ui)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def add_server_options(p) -> None:
    p.add_argument(
        "--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)"
    )
    p.add_argument("--port", type=int_in(1, 65535), default=7860, help="port (default: 7860)")
    p.add_argument("--token", help="the access token for a non-local --host (default: a random one)")


def server_address(args: argparse.Namespace) -> tuple[str | None, str]:
    """(the token a non-local --host needs, the page's address), once the port is known to be free."""
    token = None
    if not is_loopback(args.host):
        token = args.token or secrets.token_urlsafe(24)
        if len(token) < 16:
            raise UsageError("--token must be at least 16 characters")
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    with socket.socket(family) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((args.host, args.port))
        except OSError as exc:
            raise FacelabError(
                f"cannot listen on {args.host}:{args.port} ({exc.strerror}): try another --port or --host"
            ) from None
    shown = {"0.0.0.0": "127.0.0.1", "::": "[::1]"}.get(
        args.host, f"[{args.host}]" if ":" in args.host else args.host
    )
    if token:
        say(f"access token: {token} (every request needs it; it is in the address below)")
    return token, f"http://{shown}:{args.port}/" + (f"?token={token}" if token else "")


def ui_modules():
    try:
        import uvicorn

        from facelab.ui.app import create_app
    except ImportError as exc:
        raise FacelabError(
            f"the UI needs its extra packages ({exc.name}): pip install 'facelab[ui]'"
        ) from None
    return uvicorn, create_app


def cmd_ui(args: argparse.Namespace) -> int:
    uvicorn, create_app = ui_modules()
    ws = workspace_from(args)
    if not ws.root.is_dir():
        raise UsageError(f"{ws.root} is not a folder: give the workspace with -w DIR")
    token, url = server_address(args)
    say(f"facelab ui for {ws.root}: open {url}  (Ctrl-C stops the server; running jobs go on)")
    uvicorn.run(create_app(ws.root, token), host=args.host, port=args.port, log_level="warning")
    return 0
