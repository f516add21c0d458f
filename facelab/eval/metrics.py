"""Per-frame measurements of a swap against its dst frame: pure functions of images and landmarks.

Landmarks are dlib's 68 points in frame pixels. Every ratio is "result against dst", so a result
equal to its dst scores 1 (or 0 for differences) whatever the video.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from skimage.color import deltaE_ciede2000

INNER = slice(17, 68)  # brows, eyes, nose and mouth: what expression is made of
EPS = 1e-6

# A generic head (mm) for the PnP pose fit: nose tip, chin, eye outer corners, mouth corners.
_POSE_POINTS = [30, 8, 36, 45, 48, 54]
_HEAD = np.array([(0.0, 0.0, 0.0), (0.0, -330.0, -65.0), (-225.0, 170.0, -135.0), (225.0, 170.0, -135.0),
                  (-150.0, -150.0, -125.0), (150.0, -150.0, -125.0)])  # fmt: skip


def eye_distance(landmarks: np.ndarray) -> float:
    """Inter-ocular distance: between the outer eye corners."""
    return float(np.linalg.norm(landmarks[36] - landmarks[45])) + EPS


def nme(result: np.ndarray, dst: np.ndarray) -> float:
    """Mean landmark error on brows, eyes, nose and mouth over the dst's inter-ocular distance."""
    return float(np.linalg.norm(result[INNER] - dst[INNER], axis=1).mean() / eye_distance(dst))


def head_pose(landmarks: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """(yaw, pitch, roll) in degrees from a PnP fit of six landmarks to a generic head."""
    h, w = shape[:2]
    camera = np.array([[w, 0, w / 2], [0, w, h / 2], [0, 0, 1]], np.float64)
    image = landmarks[_POSE_POINTS].astype(np.float64)
    ok, rvec, _ = cv2.solvePnP(_HEAD, image, camera, np.zeros(4), flags=cv2.SOLVEPNP_ITERATIVE)
    if not ok:
        return np.full(3, np.nan)
    rot = cv2.Rodrigues(rvec)[0]
    pitch = math.degrees(math.atan2(rot[2, 1], rot[2, 2]))
    yaw = math.degrees(math.asin(max(-1.0, min(1.0, -rot[2, 0]))))
    roll = math.degrees(math.atan2(rot[1, 0], rot[0, 0]))
    return np.array([yaw, pitch, roll])


def pose_difference(result: np.ndarray, dst: np.ndarray, shape: tuple[int, ...]) -> float:
    """The largest of the yaw, pitch and roll differences, in degrees (angles wrapped)."""
    d = head_pose(result, shape) - head_pose(dst, shape)
    return float(np.abs((d + 180) % 360 - 180).max())


def jitter(result: tuple[np.ndarray, np.ndarray], dst: tuple[np.ndarray, np.ndarray]) -> float:
    """Landmark motion from the previous frame that the dst's own motion does not explain, over the
    inter-ocular distance: (result now - result before) - (dst now - dst before)."""
    extra = (result[1] - result[0]) - (dst[1] - dst[0])
    return float(np.linalg.norm(extra, axis=1).mean() / eye_distance(dst[1]))


def face_regions(landmarks: np.ndarray, shape: tuple[int, ...]) -> dict[str, np.ndarray]:
    """Boolean masks: `face` (the landmark hull), `inner` (the hull shrunk by a fifth of the eye
    distance: skin, eyes and mouth, no border), `outside` (beyond the hull grown by half the eye
    distance) and `band` (a strip a tenth of the eye distance either side of the hull's edge)."""
    hull = np.zeros(shape[:2], np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(np.round(landmarks).astype(np.int32)), 1)
    d = eye_distance(landmarks)
    # Distances to the hull's edge, from inside and from outside (two passes instead of dilating
    # with kernels as wide as the face).
    inside = cv2.distanceTransform(hull, cv2.DIST_L2, 5)
    outside = cv2.distanceTransform(1 - hull, cv2.DIST_L2, 5)
    face = hull > 0
    return {"face": face, "inner": inside > d / 5, "outside": outside > d / 2,
            "band": np.where(face, inside, outside) <= d / 10}  # fmt: skip


def psnr(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> float:
    """PSNR in dB of a against b over the pixels where `where` holds (99 when equal)."""
    if not where.any():
        return float("nan")
    mse = float(((a[where].astype(np.float64) - b[where]) ** 2).mean())
    return 99.0 if mse < 1e-10 else 10 * math.log10(255.0**2 / mse)


def _gradient_energy(image: np.ndarray, where: np.ndarray) -> float:
    grey = cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32)
    gx, gy = cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1)
    return float((gx[where] ** 2 + gy[where] ** 2).mean())


def seam(result: np.ndarray, dst: np.ndarray, band: np.ndarray) -> float:
    """Gradient energy along the paste's border, result over dst: a visible edge is > 1."""
    return _gradient_energy(result, band) / (_gradient_energy(dst, band) + EPS)


def color_difference(result: np.ndarray, dst: np.ndarray, inner: np.ndarray) -> float:
    """CIEDE2000 between the mean colours of the inner face (a colour cast reads > 10)."""

    ys, xs = np.nonzero(inner)
    if not len(ys):
        return float("nan")
    box = (slice(ys.min(), ys.max() + 1), slice(xs.min(), xs.max() + 1))

    def mean_lab(image: np.ndarray) -> np.ndarray:
        lab = cv2.cvtColor(image[box].astype(np.float32) / 255.0, cv2.COLOR_BGR2Lab)
        return lab[inner[box]].mean(0)

    return float(deltaE_ciede2000(mean_lab(result), mean_lab(dst)))


def sharpness(result: np.ndarray, dst: np.ndarray, inner: np.ndarray) -> float:
    """Variance of the Laplacian on the inner face, result over dst (a blurred face is < 1)."""

    def var(image: np.ndarray) -> float:
        lap = cv2.Laplacian(cv2.cvtColor(image, cv2.COLOR_BGR2GRAY).astype(np.float32), cv2.CV_32F)
        return float(lap[inner].var())

    return var(result) / (var(dst) + EPS)


def backward_flow(dst_before: np.ndarray, dst_now: np.ndarray, long_side: int = 256) -> np.ndarray:
    """Farneback optical flow from the dst's frame to its previous one (where each pixel was),
    computed at most `long_side` pixels wide and scaled back to the frames' size."""
    h, w = dst_now.shape[:2]
    scale = min(1.0, long_side / max(h, w))
    size = (max(1, round(w * scale)), max(1, round(h * scale)))
    grey = [cv2.resize(cv2.cvtColor(f, cv2.COLOR_BGR2GRAY), size, interpolation=cv2.INTER_AREA)
            for f in (dst_now, dst_before)]  # fmt: skip
    flow = cv2.calcOpticalFlowFarneback(grey[0], grey[1], None, 0.5, 3, 15, 3, 5, 1.2, 0)
    return cv2.resize(flow, (w, h), interpolation=cv2.INTER_LINEAR) / scale


def warp_error(before: np.ndarray, now: np.ndarray, flow: np.ndarray, where: np.ndarray) -> float:
    """Mean absolute difference (0-255) between a frame and its previous one moved along the flow,
    over `where`: what the motion does not explain. Flicker raises it."""
    h, w = flow.shape[:2]
    grid = np.mgrid[0:h, 0:w][::-1].transpose(1, 2, 0).astype(np.float32)
    moved = cv2.remap(before, grid + flow, None, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return float(np.abs(moved[where].astype(np.float32) - now[where]).mean())


def changed(result: np.ndarray, dst: np.ndarray, face: np.ndarray) -> bool:
    """Whether anything was swapped: the face differs from the dst's by more than encoding noise."""
    return float(np.abs(result[face].astype(np.float32) - dst[face]).mean()) > 2.0


def summarise(values: list[float]) -> dict[str, float | None]:
    """mean, p5 and p95 of the finite values (None where there are none)."""
    v = np.array([x for x in values if x is not None and np.isfinite(x)], np.float64)
    if not len(v):
        return {"mean": None, "p5": None, "p95": None, "frames": 0}
    return {"mean": float(v.mean()), "p5": float(np.percentile(v, 5)), "p95": float(np.percentile(v, 95)),
            "frames": int(len(v))}  # fmt: skip
