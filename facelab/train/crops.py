"""Decoding and re-cropping one aligned face for training (no torch here: it runs in workers)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from facelab.faces import masks
from facelab.faces.align import crop_for_model
from facelab.faces.meta import Polygon
from facelab.media.images import DamagedImage, read_image


@dataclass
class FaceJob:
    """One face to load. Its face mask is, in this order of preference: the rendered label
    polygons (`labels`, for XSeg training), the applied XSeg mask (`xseg_mask`), the landmark hull."""

    path: str
    face_type: str
    meta_size: int
    landmarks: np.ndarray
    res: int
    model_type: str
    xseg_mask: bytes | None = None
    labels: list[Polygon] | None = None


def _warp(image: np.ndarray, mat: np.ndarray, res: int, interp: int, border: int) -> np.ndarray:
    return cv2.warpAffine(image, mat, (res, res), flags=interp, borderMode=border)


def load_face(job: FaceJob) -> tuple[np.ndarray, np.ndarray, bool] | str:
    """(face BGR uint8, masks (2, res, res) uint8: face, eyes and mouth, whether an applied XSeg mask
    was damaged and the hull used instead), or the error line of a damaged image."""
    try:
        image = read_image(job.path)
    except DamagedImage as exc:
        return str(exc)
    landmarks, meta_size = job.landmarks, job.meta_size
    if image.shape[0] != meta_size:  # resized by another tool: landmarks follow the pixels
        landmarks = landmarks * (image.shape[0] / meta_size)
        meta_size = image.shape[0]
    mat = crop_for_model(job.face_type, meta_size, landmarks, job.res, job.model_type)
    if job.face_type == job.model_type:
        interp = cv2.INTER_AREA if meta_size > job.res else cv2.INTER_CUBIC
        face = cv2.resize(image, (job.res, job.res), interpolation=interp)
    else:
        face = _warp(image, mat, job.res, cv2.INTER_CUBIC, cv2.BORDER_REPLICATE)
    pts = landmarks @ mat[:, :2].T + mat[:, 2]
    face_mask, damaged = None, False
    if job.labels is not None:
        drawn = masks.label_mask(job.labels, meta_size) * 255
        face_mask = _warp(drawn, mat, job.res, cv2.INTER_LINEAR, cv2.BORDER_CONSTANT)
    elif job.xseg_mask is not None:
        applied = masks.decode_xseg_mask(job.xseg_mask)
        damaged = applied is None
        if applied is not None:  # stored at its own size (256) over the whole aligned image
            scale = meta_size / applied.shape[0]
            to_crop = mat @ np.array([[scale, 0, 0], [0, scale, 0], [0, 0, 1]], np.float64)
            face_mask = _warp(applied, to_crop, job.res, cv2.INTER_LINEAR, cv2.BORDER_CONSTANT)
    if face_mask is None:
        face_mask = masks.hull_mask(pts, job.res)
    return face, np.stack([face_mask, masks.eyes_mouth_mask(pts, job.res)]), damaged
