"""XSeg labels on aligned faces: read, check, write (in each face's own metadata, atomically, the
image data untouched), export to and import from a plain JSON file, and remove; applied masks are
removed here too, and labelled faces fetched into a folder of their own.

A label file is `{"format": "facelab-xseg-labels", "faces": {"<file name>": [{"type": "include",
"points": [[x, y], ...]}, ...]}}`, points in aligned-face pixels.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facelab.errors import FacelabError
from facelab.faces import meta
from facelab.faces.faceset import editing, load_faceset
from facelab.fsutil import is_file_name, read_json, write_bytes_atomic, write_json_atomic

FORMAT = "facelab-xseg-labels"


@dataclass
class Checked:
    """Polygons fit to store, and what had to change."""

    polygons: list[meta.Polygon]
    dropped: int = 0  # fewer than 3 points
    clipped: int = 0  # points moved onto the image's edge


def check(polygons: list[meta.Polygon], size: int) -> Checked:
    """Drop polygons of fewer than 3 points and clip points into the image (0 .. size). A
    self-intersecting polygon is kept: it is filled even-odd, as the reference fills it."""
    out = Checked([])
    for p in polygons:
        if len(p.points) < 3:
            out.dropped += 1
            continue
        clipped = np.clip(p.points, 0, size)
        out.clipped += int(np.any(clipped != p.points, axis=1).sum())
        out.polygons.append(meta.Polygon(p.include, clipped))
    return out


def write_face(path: Path, face: meta.FaceMeta) -> None:
    """Rewrite one aligned face's metadata (atomic; the image data stays byte for byte)."""
    write_bytes_atomic(path, meta.embed(path.read_bytes(), face))


def set_labels(path: Path, polygons: list[meta.Polygon]) -> Checked:
    face = meta.read(path)
    checked = check(polygons, face.size)
    face.polygons = checked.polygons
    write_face(path, face)
    return checked


def parse_polygons(items, where: str) -> list[meta.Polygon]:
    if not isinstance(items, list):
        raise FacelabError(f"{where}: the polygons must be a list")
    try:
        return [meta.Polygon.from_json(p) for p in items]
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise FacelabError(f"{where}: a polygon is malformed ({exc})") from None


@dataclass
class Counts:
    faces: int = 0
    polygons: int = 0
    dropped: int = 0
    clipped: int = 0
    missing: list[str] = field(default_factory=list)  # names in a label file with no such face


def export_labels(folders: list[Path], out: Path) -> Counts:
    counts, faces = Counts(), {}
    for folder in folders:
        for f in load_faceset(folder).faces:
            if f.meta.polygons:
                faces[f.path.name] = [p.to_json() for p in f.meta.polygons]
                counts.faces += 1
                counts.polygons += len(f.meta.polygons)
    write_json_atomic(out, {"format": FORMAT, "faces": faces})
    return counts


def import_labels(source: Path, folder: Path) -> Counts:
    """Set the labels of `folder`'s faces from a label file (faces it does not name keep theirs)."""
    try:
        d = read_json(source)
    except (OSError, ValueError) as exc:
        raise FacelabError(f"{source} cannot be read as a label file ({exc})") from None
    if not isinstance(d, dict) or d.get("format") != FORMAT or not isinstance(d.get("faces"), dict):
        raise FacelabError(f"{source} is not a facelab XSeg label file (see `facelab xseg labels export`)")
    names = [n for n in d["faces"] if not is_file_name(Path(n).name)]
    if names:
        raise FacelabError(f"{source}: {names[0][:60]!r} is not a face's file name")
    wanted = {name: parse_polygons(items, f"{source}: {name}") for name, items in d["faces"].items()}
    counts = Counts()
    with editing(folder, "xseg labels import"):
        for name, polygons in wanted.items():
            path = Path(folder) / Path(name).name
            if not path.is_file():
                counts.missing.append(name)
                continue
            checked = set_labels(path, polygons)
            counts.faces += 1
            counts.polygons += len(checked.polygons)
            counts.dropped += checked.dropped
            counts.clipped += checked.clipped
    return counts


def _rewrite_all(folder: Path, what: str, change) -> int:
    """Apply `change(face) -> bool` to every face's metadata; rewrite those it changed."""
    done = 0
    with editing(folder, what):
        for f in load_faceset(folder).faces:
            if change(f.meta):
                write_face(f.path, f.meta)
                done += 1
    return done


def remove_labels(folder: Path) -> int:
    def drop(m: meta.FaceMeta) -> bool:
        had, m.polygons = bool(m.polygons), []
        return had

    return _rewrite_all(folder, "xseg remove-labels", drop)


def remove_masks(folder: Path) -> int:
    def drop(m: meta.FaceMeta) -> bool:
        had, m.xseg_mask = m.xseg_mask is not None, None
        m.extra.pop("xseg_model", None)
        return had

    return _rewrite_all(folder, "xseg remove", drop)


def fetch(folder: Path, target: Path, overwrite: bool = False) -> tuple[int, list[str]]:
    """Copy the labelled faces into `target` (the reference's `aligned_xseg/`); returns (copied,
    names left alone because a different file of that name is there and not `overwrite`)."""
    target.mkdir(parents=True, exist_ok=True)
    copied, kept = 0, []
    for f in load_faceset(folder).faces:
        if not f.meta.polygons:
            continue
        data, dest = f.path.read_bytes(), target / f.path.name
        if dest.exists() and dest.read_bytes() != data and not overwrite:
            kept.append(f.path.name)
            continue
        write_bytes_atomic(dest, data)
        copied += 1
    return copied, kept
