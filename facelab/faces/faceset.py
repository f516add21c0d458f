"""A folder of aligned faces: loading with metadata, trash, renames that can be undone.

Rejected faces move to `<aligned>_trash/` and are never deleted. Sorting renames faces to
`00000.jpg, 00001.jpg …`; `aligned/.names.json` remembers every face's original name so
`facelab sort --restore-names` can put them back.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facelab import locks
from facelab.errors import FacelabError
from facelab.faces import meta
from facelab.fsutil import fsync_dir, parse_json, remove_temps_in, write_json_atomic
from facelab.media.images import read_image
from facelab.workspace import image_files

NAMES_FILE = ".names.json"


@dataclass
class AlignedFace:
    path: Path
    meta: meta.FaceMeta

    def image(self) -> np.ndarray:
        """The pixels; DamagedImage (a FacelabError) when the file is damaged."""
        return read_image(self.path)


@dataclass
class Faceset:
    folder: Path
    faces: list[AlignedFace]
    broken: list[tuple[Path, str]]  # files skipped: no or damaged metadata

    @property
    def trash_dir(self) -> Path:
        return self.folder.with_name(self.folder.name + "_trash")


@contextlib.contextmanager
def editing(folder: Path, what: str) -> Iterator[None]:
    """Hold the faceset for a step that changes it (extract, sort, filter, trash, restore names,
    XSeg masks and labels, DFL conversion): a second such step on the same folder is refused,
    naming the first (locks.hold). Once held, the temporary files a killed step left half-written
    are removed: no live writer can own them."""
    with locks.hold(folder, what):
        remove_temps_in(folder)
        yield


def load_faceset(folder: Path) -> Faceset:
    if not folder.is_dir():
        raise FacelabError(f"{folder} does not exist: run `facelab extract-faces` first")
    faces, broken = [], []
    for p in image_files(folder):
        try:
            faces.append(AlignedFace(p, meta.read(p)))
        except meta.MetadataError as exc:
            broken.append((p, str(exc)))
    if not faces:
        extra = f" ({len(broken)} images without face metadata)" if broken else ""
        raise FacelabError(f"{folder} holds no aligned faces{extra}: run `facelab extract-faces` first")
    return Faceset(folder, faces, broken)


def move_to_trash(fs: Faceset, faces: list[AlignedFace]) -> Path:
    trash_files(fs.folder, [f.path for f in faces])
    return fs.trash_dir


def trash_files(folder: Path, paths: list[Path]) -> list[tuple[Path, Path]]:
    """Move `paths` (inside `folder`) to `<folder>_trash/`, never replacing a file already there;
    returns (original, trashed) pairs, so the move can be undone."""
    trash = folder.with_name(folder.name + "_trash")
    trash.mkdir(exist_ok=True)
    moved = []
    for path in paths:
        target = trash / path.name
        n = 1
        while target.exists():
            target = trash / f"{path.stem}~{n}{path.suffix}"
            n += 1
        os.replace(path, target)
        moved.append((path, target))
    fsync_dir(trash)
    fsync_dir(folder)
    return moved


def original_names(folder: Path) -> dict[str, str]:
    path = folder / NAMES_FILE
    if not path.exists():
        return {}
    try:
        return dict(parse_json(path.read_text()))
    except ValueError as exc:
        raise FacelabError(f"{path} is damaged ({exc}): original names cannot be restored") from exc


def rename_in_order(fs: Faceset, ordered: list[AlignedFace]) -> None:
    """Rename to 00000.ext … in this order, remembering each face's original name."""
    originals = original_names(fs.folder)
    plan = [(f.path, fs.folder / f"{i:05d}{f.path.suffix.lower()}") for i, f in enumerate(ordered)]
    new_map = {new.name: originals.get(old.name, old.name) for old, new in plan}
    keep = {k: v for k, v in originals.items() if k not in {old.name for old, _ in plan}}
    write_json_atomic(fs.folder / NAMES_FILE, keep | new_map)  # first, so a kill loses no name
    _two_phase_rename(fs.folder, plan)


def restore_names(folder: Path) -> int:
    originals = original_names(folder)
    plan = [
        (folder / new, folder / old)
        for new, old in originals.items()
        if (folder / new).exists() and new != old
    ]
    _two_phase_rename(folder, plan)
    (folder / NAMES_FILE).unlink(missing_ok=True)
    return len(plan)


def _two_phase_rename(folder: Path, plan: list[tuple[Path, Path]]) -> None:
    sources = {old for old, _ in plan}
    for _, new in plan:
        if new.exists() and new not in sources:
            raise FacelabError(f"{new} is in the way of renaming: move it away first; nothing was renamed")
    temps = []
    for i, (old, new) in enumerate(plan):
        tmp = folder / f".renaming-{i}{old.suffix}"
        os.replace(old, tmp)
        temps.append((tmp, new))
    for tmp, new in temps:
        os.replace(tmp, new)
    fsync_dir(folder)
