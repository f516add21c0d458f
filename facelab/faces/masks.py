"""Face masks: the hull drawn from the 68 landmarks (masked training and merging), and the XSeg
ones: label polygons rendered as the reference does, and decoded applied masks.

The hull follows the reference tool's shape: the union of convex hulls of the jaw halves,
cheeks, nose ridge and eye regions, with the eyebrows pushed up by half their distance to
the eyes so the forehead just above the brows is covered.
"""

from __future__ import annotations

import cv2
import numpy as np

_PARTS = (
    (range(0, 9), (17,)),  # right jaw
    (range(8, 17), (26,)),  # left jaw
    (range(17, 20), (8,)),  # right cheek
    (range(24, 27), (8,)),  # left cheek
    (range(19, 25), (8,)),  # nose ridge
    (range(17, 22), (27,), range(31, 36), (8,)),  # right eye region
    (range(22, 27), (27,), range(31, 36), (8,)),  # left eye region
    (range(27, 31), range(31, 36)),  # nose
)


def expanded_brows(landmarks: np.ndarray, amount: float = 1.0) -> np.ndarray:
    """Landmarks with the eyebrows (17-26) raised by `amount` x half their distance to the eye tops."""
    p = np.asarray(landmarks, np.float64).copy()
    left_mid = (p[36] + p[0]) / 2
    right_mid = (p[16] + p[45]) / 2
    eye_top_l = np.array([(p[36] + left_mid) / 2, p[36], p[37], p[38], p[39]])
    eye_top_r = np.array([p[42], p[43], p[44], p[45], (p[45] + right_mid) / 2])
    p[17:22] += amount * 0.5 * (p[17:22] - eye_top_l)
    p[22:27] += amount * 0.5 * (p[22:27] - eye_top_r)
    return p


def hull_mask(landmarks: np.ndarray, size: int, scale: float = 1.0) -> np.ndarray:
    """uint8 size x size mask (255 inside the face); `scale` maps landmark pixels to mask pixels."""
    p = expanded_brows(np.asarray(landmarks, np.float64) * scale)
    return _fill_hulls(p, [[i for r in part for i in r] for part in _PARTS], size)


def _fill_hulls(points: np.ndarray, groups, size: int) -> np.ndarray:
    """uint8 mask with the convex hull of each group of landmark indices filled (anti-aliased)."""
    mask = np.zeros((size, size), np.uint8)
    for idx in groups:
        pts = np.round(points[list(idx)] * 16).astype(np.int32)  # 4 fractional bits for sub-pixel edges
        cv2.fillConvexPoly(mask, cv2.convexHull(pts), 255, lineType=cv2.LINE_AA, shift=4)
    return mask


def eyes_mouth_mask(landmarks: np.ndarray, size: int) -> np.ndarray:
    """uint8 mask of the eyes (36-47) and mouth (48-59), dilated by size/32: where eyes_mouth_prio weighs."""
    mask = _fill_hulls(np.asarray(landmarks, np.float64), (range(36, 42), range(42, 48), range(48, 60)), size)
    k = max(1, size // 32)
    return cv2.dilate(mask, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * k + 1, 2 * k + 1)))


def label_mask(polygons, size: int) -> np.ndarray:
    """XSeg label polygons rendered as the reference does: every include polygon first, then every
    exclude one (each group in stored order), filled by cv2.fillPoly on the points truncated to
    integers; points outside the image are clipped by the fill. uint8 0/1, (size, size)."""
    mask = np.zeros((size, size), np.uint8)
    for wanted in (True, False):
        for p in polygons:
            if p.include == wanted and len(p.points) >= 3:
                cv2.fillPoly(mask, [p.points.astype(np.int32)], 1 if wanted else 0)
    return mask


def decode_xseg_mask(data: bytes) -> np.ndarray | None:
    """An applied XSeg mask (encoded PNG or JPEG) as uint8 (H, W) 0..255; None when damaged."""
    if not data:
        return None
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_UNCHANGED)
    if image is None or image.ndim not in (2, 3) or image.shape[0] != image.shape[1]:
        return None
    return image if image.ndim == 2 else image[..., 0]
