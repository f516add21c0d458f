"""The models in a workspace's `model/` folder: describe, find by name, rename, move to the trash."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

from facelab.errors import FacelabError, UsageError
from facelab.fsutil import fsync_dir
from facelab.models.folder import CONFIG, STATE, TRASH, CheckpointError, ModelFolder

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9 ._-]{0,63}")


def check_name(name: str) -> str:
    if not _NAME.fullmatch(name):  # the whole name: `$` would let a trailing newline through
        raise UsageError(
            f"model name {name!r}: use 1-64 letters, digits, spaces, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


def describe(folder: ModelFolder) -> dict:
    """One row for `facelab models list`; unreadable models are listed with the reason."""
    row = {"name": folder.name, "kind": folder.class_name, "iteration": "?", "resolution": "?",
           "face_type": "?", "saved": "?", "origin": "?", "problem": ""}  # fmt: skip
    try:
        config, state = folder.read_json(CONFIG), folder.read_json(STATE)
        row |= {
            "iteration": state.get("iteration", "?"),
            "resolution": config.get("architecture", {}).get("resolution", "?"),
            "face_type": config.get("face_type", "?"),
            "saved": state.get("saved_at", "?").replace("T", " "),
            "origin": _origin(config),
        }
    except CheckpointError as exc:
        row["problem"] = str(exc)
    return row


def _origin(config: dict) -> str:
    imported = config.get("imported")
    if isinstance(imported, dict):
        return f"imported from DeepFaceLab at {imported.get('iteration', '?')}"
    return "facelab"


def _check_idle(folder: ModelFolder) -> None:
    if folder.is_locked():
        raise FacelabError(f"{folder} is being trained right now ({folder.holder()}): stop the trainer first")


def rename(folder: ModelFolder, new_name: str) -> ModelFolder:
    check_name(new_name)
    _check_idle(folder)
    target = ModelFolder.of(folder.path.parent, new_name, folder.class_name)
    if target.path.exists():
        raise FacelabError(f"{target} already exists: choose another name")
    os.rename(folder.path, target.path)
    fsync_dir(folder.path.parent)
    return target


def trash(folder: ModelFolder) -> Path:
    """Move a model to `model/_trash/` (never deleted outright)."""
    _check_idle(folder)
    bin_dir = folder.path.parent / TRASH
    bin_dir.mkdir(exist_ok=True)
    target = bin_dir / f"{folder.path.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    os.rename(folder.path, target)
    fsync_dir(folder.path.parent)
    return target
