"""Alignment: a similarity fit of 68 landmarks to a mean face, and the crop for each face type.

The mean face and the per-type coverage follow the reference tool, so an aligned `whole`
face frames exactly what a DeepFaceLab user expects and DeepFaceLab facesets and models
line up with ours.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

# Canonical names are DeepFaceLab's, so metadata is interchangeable.
FACE_TYPES = ("half_face", "midfull_face", "full_face", "whole_face", "head")
FACE_TYPE_NAMES = ("half", "mid-full", "full", "whole", "head")  # what users type, in FACE_TYPES order
FACE_TYPE_ALIASES = {
    "half": "half_face", "h": "half_face",
    "mid-full": "midfull_face", "mf": "midfull_face",
    "full": "full_face", "f": "full_face",
    "whole": "whole_face", "wf": "whole_face",
    "head": "head",
}  # fmt: skip
# Padding around the mean-face square; crop side = square side * (1 + 2*sqrt(2)*padding).
PADDING = {"half_face": 0.0, "midfull_face": 0.0675, "full_face": 0.2109375, "whole_face": 0.40, "head": 0.70}

# Mean face in a unit square: 68-point landmarks 17..67 (brows, nose, eyes, mouth).
_MEAN_FACE_17_67 = np.array([
    [0.000213256, 0.106454], [0.0752622, 0.038915], [0.18113, 0.0187482], [0.29077, 0.0344891],
    [0.393397, 0.0773906], [0.586856, 0.0773906], [0.689483, 0.0344891], [0.799124, 0.0187482],
    [0.904991, 0.038915], [0.98004, 0.106454], [0.490127, 0.203352], [0.490127, 0.307009],
    [0.490127, 0.409805], [0.490127, 0.515625], [0.36688, 0.587326], [0.426036, 0.609345],
    [0.490127, 0.628106], [0.554217, 0.609345], [0.613373, 0.587326], [0.121737, 0.216423],
    [0.187122, 0.178758], [0.265825, 0.179852], [0.334606, 0.231733], [0.260918, 0.245099],
    [0.182743, 0.244077], [0.645647, 0.231733], [0.714428, 0.179852], [0.793132, 0.178758],
    [0.858516, 0.216423], [0.79751, 0.244077], [0.719335, 0.245099], [0.254149, 0.780233],
    [0.340985, 0.745405], [0.428858, 0.727388], [0.490127, 0.742578], [0.551395, 0.727388],
    [0.639268, 0.745405], [0.726104, 0.780233], [0.642159, 0.864805], [0.556721, 0.902192],
    [0.490127, 0.909281], [0.423532, 0.902192], [0.338094, 0.864805], [0.290379, 0.784792],
    [0.428096, 0.778746], [0.490127, 0.785343], [0.552157, 0.778746], [0.689874, 0.784792],
    [0.553364, 0.824182], [0.490127, 0.831803], [0.42689, 0.824182],
], dtype=np.float64)  # fmt: skip
# The fit uses the stable points: brows, nose, eyes and the two mouth corners.
FIT_INDICES = np.array(list(range(17, 49)) + [54])
MEAN_FACE = _MEAN_FACE_17_67[FIT_INDICES - 17]


def face_type_name(face_type: str) -> str:
    """What a user types for a face type (`full` for full_face): flags, prompts and messages."""
    return FACE_TYPE_NAMES[FACE_TYPES.index(canonical_face_type(face_type))]


def canonical_face_type(name: str) -> str:
    """The stored name (DeepFaceLab's) of any spelling: `full`, `f` or `full_face` -> full_face."""
    key = name.strip().lower()
    if key in FACE_TYPES:
        return key
    if key in FACE_TYPE_ALIASES:
        return FACE_TYPE_ALIASES[key]
    raise ValueError(f"unknown face type {name!r}: use half, mid-full, full, whole or head")


def umeyama(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity transform (rotation, uniform scale, shift) taking src to dst; 2x3."""
    src = np.asarray(src, np.float64)
    dst = np.asarray(dst, np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    sign = np.ones(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        sign[1] = -1
    rot = u @ np.diag(sign) @ vt
    scale = (sig * sign).sum() / s.var(0).sum()
    m = np.zeros((2, 3))
    m[:, :2] = scale * rot
    m[:, 2] = mu_d - m[:, :2] @ mu_s
    return m


def transform_points(points: np.ndarray, mat: np.ndarray, invert: bool = False) -> np.ndarray:
    if invert:
        mat = cv2.invertAffineTransform(mat)
    pts = np.asarray(points, np.float64)
    return pts @ mat[:, :2].T + mat[:, 2]


def unit_face_mat(landmarks: np.ndarray) -> np.ndarray:
    """Frame -> unit mean-face square."""
    return umeyama(np.asarray(landmarks)[FIT_INDICES], MEAN_FACE)


def averaged_yaw(unit_landmarks: np.ndarray) -> float:
    """Signed yaw estimate from the jaw-to-nose-bridge distances on each side (unit-square coords)."""
    p = unit_landmarks
    left = ((p[27, 0] - p[0, 0]) + (p[28, 0] - p[1, 0]) + (p[29, 0] - p[2, 0])) / 3.0
    right = ((p[16, 0] - p[27, 0]) + (p[15, 0] - p[28, 0]) + (p[14, 0] - p[29, 0])) / 3.0
    return float(right - left)


def face_transform(landmarks: np.ndarray, size: int, face_type: str) -> np.ndarray:
    """2x3 affine taking frame pixels to the `size`x`size` aligned crop of `face_type`."""
    landmarks = np.asarray(landmarks, np.float64)
    unit = unit_face_mat(landmarks)
    corners = transform_points([(0, 0), (1, 0), (1, 1), (0, 1), (0.5, 0.5)], unit, invert=True)
    centre = corners[4].copy()
    diag_tb = corners[2] - corners[0]
    diag_tb /= np.linalg.norm(diag_tb)
    diag_bt = corners[1] - corners[3]
    diag_bt /= np.linalg.norm(diag_bt)
    half_diag = np.linalg.norm(corners[0] - corners[2]) * (PADDING[face_type] * math.sqrt(2.0) + 0.5)
    up = corners[0] - corners[3]  # from bottom-left to top-left: the face's "up", one square tall
    if face_type == "whole_face":
        centre += up * 0.07
    elif face_type == "head":
        across = corners[0] - corners[1]  # from top-right to top-left
        yaw = averaged_yaw(transform_points(landmarks, unit))
        yaw *= abs(math.tanh(yaw * 2))
        centre -= across * (yaw / 2.0)
        centre += up * 0.50
    src = np.float32(
        [centre - diag_tb * half_diag, centre + diag_bt * half_diag, centre + diag_tb * half_diag]
    )
    dst = np.float32([(0, 0), (size, 0), (size, size)])
    return cv2.getAffineTransform(src, dst).astype(np.float64)


def warp_face(image: np.ndarray, mat: np.ndarray, size: int) -> np.ndarray:
    return cv2.warpAffine(image, mat, (size, size), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)


def crop_quad(mat: np.ndarray, size: int) -> np.ndarray:
    """The aligned crop's corners in frame pixels: top-left, top-right, bottom-right, bottom-left."""
    return transform_points([(0, 0), (size, 0), (size, size), (0, size)], mat, invert=True)


def crop_for_model(
    face_type: str, meta_size: int, landmarks: np.ndarray, res: int, model_type: str
) -> np.ndarray:
    """2x3 affine from the aligned image to the model's crop (a plain resize when the types match)."""
    if face_type == model_type:
        s = res / meta_size
        return np.array([[s, 0, 0], [0, s, 0]], np.float64)
    return face_transform(landmarks, res, model_type)
