"""Options every command takes, and the workspace they name."""

from __future__ import annotations

import argparse
from pathlib import Path

from facelab.workspace import Workspace, default_workspace

WATERMARK = "synthetic (facelab)"  # --watermark without a text


def common_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    g = common.add_argument_group("common options")
    g.add_argument(
        "--workspace",
        "-w",
        type=Path,
        default=None,
        help="workspace folder (default: $FACELAB_WORKSPACE or ./workspace)",
    )
    g.add_argument("--yes", "-y", action="store_true", help="take every default without asking")
    g.add_argument("--quiet", "-q", action="store_true", help="no progress bars")
    g.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    return common


def workspace_from(args: argparse.Namespace) -> Workspace:
    return Workspace(Path(args.workspace) if args.workspace else default_workspace())


def face_model(ws: Workspace, name: str | None):
    """What `--model` names for merge and live: an exported FILE.dfm/.onnx (a Path), or a face model
    folder of the workspace (the newest without a name; never an XSeg model)."""
    from facelab.dfm.runtime import is_dfm_path
    from facelab.models.folder import find_model

    return Path(name) if is_dfm_path(name) else find_model(ws.model_dir, name, exclude=("XSeg",))


def add_mark_arguments(p) -> None:
    """--no-mark and --watermark [TEXT], for the steps that write swapped frames or videos."""
    p.add_argument("--no-mark", action="store_true",
                   help="leave out the metadata marking the output as synthetic (on by default)")  # fmt: skip
    p.add_argument("--watermark", nargs="?", const=WATERMARK, metavar="TEXT",
                   help=f"a visible label in every frame's corner (default text: {WATERMARK!r})")  # fmt: skip


def stamp_from(args: argparse.Namespace, mark: dict):
    from facelab.media.mark import Stamp

    return Stamp(None if args.no_mark else mark, args.watermark)
