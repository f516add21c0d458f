"""A labelled occlusion set made from real faces, since none is public here: a hand- or
microphone-shaped polygon, filled with texture cut from another photo, is pasted over each aligned
face. The truth is the face's landmark hull minus the occluder, and the labels say exactly that
(an include polygon around the hull, an exclude polygon over the occluder)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from facelab.faces import masks, meta
from facelab.xseg.labels import set_labels


def _hand(rng: np.random.Generator, size: int) -> np.ndarray:
    """A palm with four fingers, pointing up, centred at the origin (pixels)."""
    s = size / 256
    palm = [(-38, 0), (-40, 40), (-20, 70), (20, 70), (40, 40), (38, 0)]
    fingers = []
    for i, x in enumerate((-30, -10, 10, 30)):
        h = (70, 85, 80, 62)[i] * rng.uniform(0.85, 1.1)
        fingers += [(x - 8, 0), (x - 8, -h), (x + 8, -h), (x + 8, 0)]
    pts = palm[:1] + fingers + palm[-1:] + palm[::-1][1:-1]
    return np.array(pts, np.float64) * s


def _microphone(rng: np.random.Generator, size: int) -> np.ndarray:
    s = size / 256
    t = np.linspace(0, np.pi, 16)
    r = 34 * rng.uniform(0.9, 1.2)
    head = np.stack([r * np.cos(t), -r * np.sin(t)], 1)[::-1]
    handle = np.array([(r, 0), (12, 20), (10, 140), (-10, 140), (-12, 20), (-r, 0)])
    return np.concatenate([head, handle]) * s


def occluder(rng: np.random.Generator, landmarks: np.ndarray, size: int) -> np.ndarray:
    """A hand or a microphone over the lower half or a side of the face."""
    shape = _hand(rng, size) if rng.random() < 0.6 else _microphone(rng, size)
    angle = rng.uniform(-0.6, 0.6)
    rot = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    anchor = landmarks[rng.choice([48, 54, 57, 3, 13, 30])]  # mouth corners, chin, cheeks, nose
    return shape @ rot.T * rng.uniform(0.9, 1.2) + anchor + rng.uniform(-12, 12, 2) * size / 256


def make_set(faces: list[Path], textures: list[np.ndarray], out: Path, labelled: int,
             seed: int = 0) -> list[dict]:  # fmt: skip
    """Copy `faces` into `out` with an occluder pasted on each; the first `labelled` get label
    polygons. Returns, per face, its file, the true mask and the landmark-hull mask (uint8 0/1)."""
    rng = np.random.default_rng(seed)
    out.mkdir(parents=True, exist_ok=True)
    truth = []
    for i, src in enumerate(faces):
        face = meta.read(src)
        image = cv2.imread(str(src))
        size = image.shape[0]
        hull = (masks.hull_mask(face.landmarks, size) > 127).astype(np.uint8)
        poly = occluder(rng, face.landmarks, size)
        tex = textures[rng.integers(len(textures))]
        y, x = rng.integers(0, tex.shape[0] - size), rng.integers(0, tex.shape[1] - size)
        patch = tex[y : y + size, x : x + size]
        cover = np.zeros((size, size), np.uint8)
        cv2.fillPoly(cover, [poly.astype(np.int32)], 1)
        pasted = np.where(cover[..., None] > 0, patch, image)
        path = out / src.name
        _, data = cv2.imencode(".jpg", pasted, [cv2.IMWRITE_JPEG_QUALITY, 95])
        path.write_bytes(meta.embed(data.tobytes(), face))
        if i < labelled:
            contours, _ = cv2.findContours(hull, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
            outline = max(contours, key=cv2.contourArea)[:, 0].astype(np.float64)
            set_labels(path, [meta.Polygon(True, outline), meta.Polygon(False, poly)])
        truth.append({"path": path, "true": hull * (1 - cover), "hull": hull, "occluder": cover})
    return truth


def textures(media: Path, size: int) -> list[np.ndarray]:
    """Photos to cut occluder texture from, scaled so a face-sized patch fits."""
    out = []
    for p in sorted(media.glob("face_*.jpg")):
        img = cv2.imread(str(p))
        scale = max(1.0, (size + 8) / min(img.shape[:2]))
        out.append(cv2.resize(img, None, fx=scale, fy=scale) if scale > 1 else img)
    return out


def iou(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a > 0, b > 0
    return float((a & b).sum() / max(1, (a | b).sum()))



def score(truth: list[dict]) -> tuple[list[float], list[float]]:
    """(IoU of each face's applied XSeg mask, IoU of its landmark hull), both against the truth."""
    ours, hull = [], []
    for t in truth:
        mask = masks.decode_xseg_mask(meta.read(t["path"]).xseg_mask)
        mask = cv2.resize(mask, t["true"].shape[::-1], interpolation=cv2.INTER_LINEAR) > 127
        ours.append(iou(mask, t["true"]))
        hull.append(iou(t["hull"], t["true"]))
    return ours, hull
