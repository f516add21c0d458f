"""Training faces: aligned faces re-cropped to the model's face type and size, with hull masks.

Every face is decoded, re-cropped and masked once, in worker processes, and kept in memory as
uint8 (a 96 px face costs 36 KB, so 10,000 faces take 370 MB). Augmentation then runs on the
training device from these tensors (see `augment.py`), so nothing waits on disk or on Python
workers during training.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from facelab import progress
from facelab.errors import FacelabError
from facelab.faces.align import FACE_TYPES, averaged_yaw, face_type_name, transform_points, unit_face_mat
from facelab.faces.faceset import AlignedFace, load_faceset
from facelab.procs import clean_pool
from facelab.train.crops import FaceJob
from facelab.train.crops import load_face as _load_one


@dataclass
class FaceSamples:
    """One side's faces: images (N,3,R,R) BGR uint8, masks (N,2,R,R) uint8 (face hull, eyes and
    mouth), and file names."""

    folder: Path
    images: torch.Tensor
    masks: torch.Tensor
    names: list[str]
    skipped: int  # images without usable metadata
    yaws: list[float]  # head turn per face, for uniform_yaw sampling

    def __len__(self) -> int:
        return len(self.names)

    def to(self, device: torch.device) -> FaceSamples:
        return FaceSamples(
            self.folder, self.images.to(device), self.masks.to(device), self.names, self.skipped, self.yaws
        )


def _empty(folder: Path, res: int) -> FaceSamples:
    return FaceSamples(folder, torch.empty(0, 3, res, res, dtype=torch.uint8),
                       torch.empty(0, 2, res, res, dtype=torch.uint8), [], 0, [])  # fmt: skip


def check_face_types(faces: list[AlignedFace], folder: Path, model_type: str, model_label: str) -> None:
    need = FACE_TYPES.index(model_type)
    small = [f for f in faces if FACE_TYPES.index(f.meta.face_type) < need]
    if small:
        kinds = sorted({f.meta.face_type for f in small})
        raise FacelabError(
            f"{folder} holds {len(small)} {'/'.join(kinds)} faces (e.g. {small[0].path.name}), "
            f"smaller than the {model_type} faces {model_label} trains on: re-extract with "
            f"`facelab extract-faces --face-type {face_type_name(model_type)}` (or larger)"
        )


def load_samples(folder: Path, res: int, model_type: str, model_label: str, workers: int | None = None,
                 labels: bool = False) -> FaceSamples:  # fmt: skip
    """Load `folder`'s aligned faces for a model of `res` px and `model_type`; refuse smaller face types.
    The face mask is the applied XSeg mask where a face has one, else the landmark hull; `labels`
    (XSeg training) loads only the faces with label polygons, with those as the mask."""
    if labels and not Path(folder).is_dir():
        return _empty(folder, res)
    fs = load_faceset(folder)
    if labels:
        fs.faces = [f for f in fs.faces if f.meta.polygons]
        if not fs.faces:
            return _empty(folder, res)
    check_face_types(fs.faces, folder, model_type, model_label)
    jobs = [FaceJob(str(f.path), f.meta.face_type, f.meta.size, f.meta.landmarks, res, model_type,
                    None if labels else f.meta.xseg_mask, f.meta.polygons if labels else None)
            for f in fs.faces]  # fmt: skip
    workers = max(1, min(workers or os.cpu_count() or 1, len(jobs) // 64 + 1))
    images = np.empty((len(jobs), res, res, 3), np.uint8)
    mask_arr = np.empty((len(jobs), 2, res, res), np.uint8)
    damaged, keep = [], []  # error lines; indices (into fs.faces) of the faces loaded
    bad_masks = 0
    pool = clean_pool(workers) if workers > 1 else contextlib.nullcontext()
    with pool, progress.bar(len(jobs), f"loading {folder.parent.name}/{folder.name}", unit="face") as pbar:
        results = pool.map(_load_one, jobs, chunksize=32) if workers > 1 else map(_load_one, jobs)
        for result in results:
            pbar.update(1)
            if isinstance(result, str):
                damaged.append(result)
                continue
            images[len(keep)], mask_arr[len(keep)], bad_mask = result
            bad_masks += bad_mask
            keep.append(len(keep) + len(damaged))
    kept = len(keep)
    if not kept:
        raise FacelabError(f"every face in {folder} is damaged (e.g. {damaged[0]})")
    if damaged:
        progress.say(f"{folder}: skipped {len(damaged)} damaged faces; the first: {damaged[0]}")
    if bad_masks:
        progress.say(f"{folder}: {bad_masks} faces have a damaged XSeg mask: their landmark hull is used")
    faces = [fs.faces[i] for i in keep]
    names = [f.path.name for f in faces]
    if fs.broken:
        progress.say(
            f"{folder}: skipped {len(fs.broken)} images without face metadata (e.g. {fs.broken[0][0].name})"
        )
    return FaceSamples(
        folder,
        torch.from_numpy(images[:kept]).permute(0, 3, 1, 2).contiguous(),
        torch.from_numpy(mask_arr[:kept]),
        names,
        len(fs.broken) + len(damaged),
        [averaged_yaw(transform_points(f.meta.landmarks, unit_face_mat(f.meta.landmarks))) for f in faces],
    )
