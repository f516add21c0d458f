"""Faceset sorting: DeepFaceLab's methods, plus identity grouping.

Each method gives every face a score (or, for chains, an order). `sort_faceset` returns
the faces in their new order and the ones to move to the trash.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import cv2
import numpy as np

from facelab.faces import masks
from facelab.faces.align import MEAN_FACE, averaged_yaw, transform_points, unit_face_mat
from facelab.faces.faceset import AlignedFace

METHODS = ["blur", "motion-blur", "face-yaw", "face-pitch", "source-rect-size", "hist", "hist-dissim",
           "brightness", "hue", "black", "origname", "oneface", "best", "identity"]  # fmt: skip
WORK_SIZE = 256  # faces are scored at this size, so results do not depend on the aligned size


def hull_mask(face: AlignedFace, size: int = WORK_SIZE) -> np.ndarray:
    """The face hull that training and merge use (masks.hull_mask: raised brows included), at the
    work size. Scores are taken inside it; before it was shared they used the plain convex hull of
    the 68 points, so blur/hist scores moved slightly (the order of clearly different faces holds)."""
    return masks.hull_mask(face.meta.landmarks, size, scale=size / face.meta.size)


def work_image(face: AlignedFace) -> np.ndarray:
    return cv2.resize(face.image(), (WORK_SIZE, WORK_SIZE), interpolation=cv2.INTER_AREA)


# ------------------------------------------------------------------------------- per-face scores


def sharpness(face: AlignedFace) -> float:
    """Edge sharpness inside the face: mean of the strongest 10 % of gradients over local contrast."""
    grey = cv2.cvtColor(work_image(face), cv2.COLOR_BGR2GRAY).astype(np.float32)
    mask = hull_mask(face) > 0
    gx, gy = cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1)
    mag = np.sqrt(gx * gx + gy * gy)[mask]
    if mag.size == 0:
        return 0.0
    top = np.sort(mag)[-max(1, mag.size // 10) :].mean()
    contrast = grey[mask].std() + 1.0
    return float(top / contrast)


def motion_sharpness(face: AlignedFace) -> float:
    grey = cv2.cvtColor(work_image(face), cv2.COLOR_BGR2GRAY)
    lap = cv2.Laplacian(grey, cv2.CV_64F, ksize=11)
    return float(lap[hull_mask(face) > 0].var())


def yaw(face: AlignedFace) -> float:
    """Approximate yaw in radians, positive when the face turns to its left (the image's right)."""
    unit = transform_points(face.meta.landmarks, unit_face_mat(face.meta.landmarks))
    return float(np.clip(averaged_yaw(unit) * 1.6, -math.pi / 2, math.pi / 2))


def pitch(face: AlignedFace) -> float:
    """Approximate pitch in radians, positive when the face looks up: where the nose tip sits
    between the eye line and the mouth, against the mean face."""
    unit = transform_points(face.meta.landmarks, unit_face_mat(face.meta.landmarks))
    eyes = unit[36:48, 1].mean()
    mouth = unit[48:68, 1].mean()
    nose = unit[30, 1]
    ratio = (nose - eyes) / max(mouth - eyes, 1e-6)
    mean_ratio = (MEAN_FACE[13, 1] - MEAN_FACE[19:31, 1].mean()) / (0.80 - MEAN_FACE[19:31, 1].mean())
    return float(np.clip((mean_ratio - ratio) * 3.0, -math.pi / 2, math.pi / 2))


def rect_size(face: AlignedFace) -> float:
    left, top, right, bottom = face.meta.source_rect
    return float(max(0.0, right - left) * max(0.0, bottom - top))


def brightness(face: AlignedFace) -> float:
    return float(cv2.cvtColor(work_image(face), cv2.COLOR_BGR2HSV)[..., 2].mean())


def hue(face: AlignedFace) -> float:
    return float(cv2.cvtColor(work_image(face), cv2.COLOR_BGR2HSV)[..., 0].mean())


def black_pixels(face: AlignedFace) -> float:
    return float((work_image(face) == 0).sum())


# name -> (score, sharpest/largest first?)
SCORES: dict[str, tuple[Callable[[AlignedFace], float], bool]] = {
    "blur": (sharpness, True),
    "motion-blur": (motion_sharpness, True),
    "face-yaw": (yaw, True),
    "face-pitch": (pitch, True),
    "source-rect-size": (rect_size, True),
    "brightness": (brightness, True),
    "hue": (hue, True),
    "black": (black_pixels, False),
}


# ------------------------------------------------------------------------------- histograms


def _histograms(faces: list[AlignedFace], grey: bool) -> np.ndarray:
    rows = []
    for f in faces:
        img = work_image(f)
        if grey:
            h = cv2.calcHist(
                [cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)], [0], hull_mask(f), [256], [0, 256]
            ).ravel()
        else:
            h = np.concatenate([cv2.calcHist([img], [c], None, [256], [0, 256]).ravel() for c in range(3)])
        rows.append(h)
    return np.array(rows, np.float64)


def _bhattacharyya(hists: np.ndarray, channels: int) -> np.ndarray:
    """All-pairs Bhattacharyya distance, summed over channels."""
    n = len(hists)
    total = np.zeros((n, n))
    for c in np.split(hists, channels, axis=1):
        p = c / np.maximum(c.sum(1, keepdims=True), 1e-12)
        bc = np.sqrt(p) @ np.sqrt(p).T
        total += np.sqrt(np.clip(1.0 - bc, 0.0, None))
    return total


def chain_order(dist: np.ndarray) -> list[int]:
    """Greedy nearest-neighbour chain from the first face: similar faces end up adjacent."""
    n = len(dist)
    order, left = [0], set(range(1, n))
    while left:
        last = order[-1]
        nxt = min(left, key=lambda j: dist[last, j])
        order.append(nxt)
        left.remove(nxt)
    return order


# ------------------------------------------------------------------------------- sorting


def sort_faceset(
    faces: list[AlignedFace], method: str, target: int = 2000, descriptors: np.ndarray | None = None
) -> tuple[list[AlignedFace], list[AlignedFace]]:
    """(kept faces in their new order, faces for the trash)."""
    if method in SCORES:
        fn, descending = SCORES[method]
        scores = np.array([fn(f) for f in faces])
        order = np.argsort(-scores if descending else scores, kind="stable")
        return [faces[i] for i in order], []
    if method == "hist":
        return [faces[i] for i in chain_order(_bhattacharyya(_histograms(faces, False), 3))], []
    if method == "hist-dissim":
        d = _bhattacharyya(_histograms(faces, True), 1).sum(1)
        return [faces[i] for i in np.argsort(-d, kind="stable")], []
    if method == "origname":
        return sorted(faces, key=lambda f: (f.meta.source_filename, f.path.name)), []
    if method == "oneface":
        return _oneface(faces)
    if method == "best":
        return _best(faces, target)
    if method == "identity":
        if descriptors is None:
            raise ValueError("identity sorting needs face descriptors")
        return [faces[i] for i in identity_order(descriptors)], []
    raise ValueError(f"unknown sort method {method!r}")


def _oneface(faces: list[AlignedFace]) -> tuple[list[AlignedFace], list[AlignedFace]]:
    """Trash every face from a frame that produced more than one face."""
    per_frame: dict[str, int] = {}
    for f in faces:
        per_frame[f.meta.source_filename] = per_frame.get(f.meta.source_filename, 0) + 1
    keep = [f for f in faces if per_frame[f.meta.source_filename] == 1]
    trash = [f for f in faces if per_frame[f.meta.source_filename] > 1]
    return keep, trash


def _best(faces: list[AlignedFace], target: int) -> tuple[list[AlignedFace], list[AlignedFace]]:
    """Keep about `target` faces spread over yaw and pitch: sharp ones first within each bin."""
    if len(faces) <= target:
        return list(faces), []
    yaws = np.array([yaw(f) for f in faces])
    pitches = np.array([pitch(f) for f in faces])
    sharp = np.array([sharpness(f) for f in faces])
    yaw_bins = 128
    ybin = np.clip(((yaws + 1.2) / 2.4 * yaw_bins).astype(int), 0, yaw_bins - 1)
    counts = np.bincount(ybin, minlength=yaw_bins)
    wants = _share(counts, target)
    chosen: list[int] = []
    for b in np.nonzero(wants)[0]:
        want = int(wants[b])
        idx = np.where(ybin == b)[0]
        idx = idx[np.argsort(-sharp[idx])][: want * 10]  # the sharpest candidates
        pbins = np.clip(((pitches[idx] + math.pi / 2) / math.pi * want).astype(int), 0, want - 1)
        buckets = [list(idx[pbins == p]) for p in range(want)]
        picked: list[int] = []
        while len(picked) < want:  # round-robin over pitch bins, sharpest first in each
            for bucket in buckets:
                if bucket and len(picked) < want:
                    picked.append(bucket.pop(0))
        chosen += picked
    keep_set = set(chosen)
    keep = [faces[i] for i in sorted(keep_set, key=lambda i: -sharp[i])]
    return keep, [f for i, f in enumerate(faces) if i not in keep_set]


def _share(counts: np.ndarray, target: int) -> np.ndarray:
    """Split `target` over bins as evenly as their counts allow (water-filling)."""
    q = 0
    while np.minimum(counts, q + 1).sum() <= target and q < counts.max():
        q += 1
    wants = np.minimum(counts, q)
    for b in np.argsort(-counts, kind="stable"):  # hand out the remainder, fullest bins first
        if wants.sum() >= target:
            break
        if counts[b] > wants[b]:
            wants[b] += 1
    return wants


def identity_order(desc: np.ndarray, threshold: float = 0.5) -> list[int]:
    """Group faces of one person together: clusters (largest first) by descriptor distance."""
    n = len(desc)
    dist = np.linalg.norm(desc[:, None, :] - desc[None, :, :], axis=2)
    labels = -np.ones(n, int)
    current = 0
    for i in range(n):  # connected components of the "same person" graph
        if labels[i] >= 0:
            continue
        stack, labels[i] = [i], current
        while stack:
            j = stack.pop()
            for k in np.where((dist[j] < threshold) & (labels < 0))[0]:
                labels[k] = current
                stack.append(k)
        current += 1
    sizes = np.bincount(labels)
    order = []
    for lab in np.argsort(-sizes, kind="stable"):
        members = np.where(labels == lab)[0]
        centre = desc[members].mean(0)
        order += members[np.argsort(np.linalg.norm(desc[members] - centre, axis=1))].tolist()
    return order
