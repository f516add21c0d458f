"""Contact sheets: the faceset at a glance, each face labelled with its file name."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from facelab.faces.faceset import Faceset
from facelab.fsutil import write_bytes_atomic
from facelab.media.images import DamagedImage
from facelab.progress import say

_LABEL_H = 18


def write_sheets(fs: Faceset, out_dir: Path, columns: int, thumb: int, per_sheet: int) -> list[Path]:
    """The sheets; damaged faces are drawn as an empty, labelled cell and named in one warning."""
    paths, damaged = [], []
    pages = [fs.faces[i : i + per_sheet] for i in range(0, len(fs.faces), per_sheet)]
    for n, page in enumerate(pages, 1):
        rows = (len(page) + columns - 1) // columns
        sheet = np.full((rows * (thumb + _LABEL_H), columns * thumb, 3), 32, np.uint8)
        for i, face in enumerate(page):
            y, x = (i // columns) * (thumb + _LABEL_H), (i % columns) * thumb
            try:
                img = face.image()
            except DamagedImage as exc:
                damaged.append(str(exc))
                label = "damaged: " + face.path.name
            else:
                sheet[y : y + thumb, x : x + thumb] = cv2.resize(
                    img, (thumb, thumb), interpolation=cv2.INTER_AREA
                )
                label = face.path.name
            scale = min(0.4, 0.9 * thumb / max(1, 9 * len(label)))
            cv2.putText(
                sheet,
                label,
                (x + 3, y + thumb + 13),
                cv2.FONT_HERSHEY_SIMPLEX,
                scale,
                (230, 230, 230),
                1,
                cv2.LINE_AA,
            )
        path = out_dir / f"{fs.folder.name}_sheet_{n:02d}.jpg"
        write_bytes_atomic(path, cv2.imencode(".jpg", sheet, [cv2.IMWRITE_JPEG_QUALITY, 88])[1].tobytes())
        paths.append(path)
    if damaged:
        say(f"{fs.folder}: {len(damaged)} damaged faces left out of the sheet; the first: {damaged[0]}")
    return paths
