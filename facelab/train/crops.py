"""Decoding and re-cropping one aligned face for training (no torch here: it runs in workers)."""

from __future__ import annotations

import cv2
import numpy as np

from facelab.faces import masks
from facelab.faces.align import face_transform
from facelab.media.images import DamagedImage, read_image


def crop_for_model(
    face_type: str, meta_size: int, landmarks: np.ndarray, res: int, model_type: str
) -> np.ndarray:
    """2x3 affine from the aligned image to the model's crop (a plain resize when the types match)."""
    if face_type == model_type:
        s = res / meta_size
        return np.array([[s, 0, 0], [0, s, 0]], np.float64)
    return face_transform(landmarks, res, model_type)


def load_face(args: tuple[str, str, int, np.ndarray, int, str]) -> tuple[np.ndarray, np.ndarray] | str:
    path, face_type, meta_size, landmarks, res, model_type = args
    try:
        image = read_image(path)
    except DamagedImage as exc:
        return str(exc)
    if image.shape[0] != meta_size:  # resized by another tool: landmarks follow the pixels
        landmarks = landmarks * (image.shape[0] / meta_size)
        meta_size = image.shape[0]
    mat = crop_for_model(face_type, meta_size, landmarks, res, model_type)
    if face_type == model_type:
        interp = cv2.INTER_AREA if meta_size > res else cv2.INTER_CUBIC
        face = cv2.resize(image, (res, res), interpolation=interp)
    else:
        face = cv2.warpAffine(image, mat, (res, res), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
    pts = landmarks @ mat[:, :2].T + mat[:, 2]
    return face, np.stack([masks.hull_mask(pts, res), masks.eyes_mouth_mask(pts, res)])
