"""Options every command takes, and the workspace they name."""

from __future__ import annotations

import argparse
from pathlib import Path

from facelab.workspace import Workspace, default_workspace


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
