"""One pass over a result video and its dst video, frame by frame: every metric of `metrics.py`
per frame, then their summaries.

Where the dst's face is comes from the dst faceset's metadata (the workspace's `data_dst/aligned`),
or, without one, from the face detector on the dst frame. The landmarks of both frames are then
placed by one model (dlib's 68-point predictor) in the same box, so a result equal to its dst
measures exactly zero difference. Identity uses dlib's 128-D face descriptor, a model nothing in
facelab trains against.
"""

from __future__ import annotations

import multiprocessing as mp
import os
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import av
import cv2
import numpy as np

from facelab import progress
from facelab.errors import FacelabError
from facelab.eval import metrics
from facelab.faces.detect import DEFAULT_DETECTOR, create_detector, landmark_model
from facelab.faces.identity import descriptor
from facelab.faces.track import iou
from facelab.workspace import frame_number

SAME_PERSON = 0.6  # dlib's threshold for the 128-D descriptor
METRICS = ("swapped", "src_distance", "src_match", "nme", "pose_deg", "jitter", "flicker",
           "background_psnr", "seam", "delta_e", "sharpness", "detected", "covered")  # fmt: skip


@dataclass
class DstFace:
    rect: np.ndarray  # left, top, right, bottom in frame pixels


@dataclass
class Evaluation:
    result: Path
    dst: Path
    every: int
    frames: list[dict] = field(default_factory=list)  # one per evaluated frame
    decoded: int = 0  # frames read from the result

    def summary(self) -> dict[str, dict]:
        return {m: metrics.summarise([f.get(m) for f in self.frames]) for m in METRICS}


def decode(path: Path) -> Iterator[np.ndarray]:
    """A video's frames as BGR arrays."""
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as exc:
        raise FacelabError(f"{path}: cannot read it as a video ({exc}): check the file") from None
    with container:
        if not container.streams.video:
            raise FacelabError(f"{path} has no video stream: give a video file")
        try:
            for frame in container.decode(video=0):
                yield frame.to_ndarray(format="bgr24")
        except av.FFmpegError as exc:
            raise FacelabError(f"{path}: decoding failed ({exc}): the file is damaged") from None


def faces_from_metadata(faces) -> dict[int, DstFace]:
    """Frame index (0-based) -> the largest dst face in that frame, from aligned faces' metadata."""
    found: dict[int, DstFace] = {}
    for face in faces:
        number = frame_number(face.meta.source_filename)  # frames are numbered from 1
        if number is None:
            continue
        index, rect = number - 1, np.asarray(face.meta.source_rect, np.float64)
        old = found.get(index)
        if old is None or _area(rect) > _area(old.rect):
            found[index] = DstFace(rect)
    return found


def _area(rect: np.ndarray) -> float:
    return float((rect[2] - rect[0]) * (rect[3] - rect[1]))


class FrameScorer:
    """The per-frame measurements, with the detector and landmark model they use (one per process)."""

    def __init__(self, src_centroid: np.ndarray | None, detector: str = DEFAULT_DETECTOR):
        self.centroid = src_centroid
        self.detector = create_detector(detector)
        self.landmarks = landmark_model()

    def find_dst_face(self, frame: np.ndarray) -> DstFace | None:
        found = [np.asarray(box, np.float64) for box, _ in self.detector.detect(frame)]
        return DstFace(max(found, key=_area)) if found else None

    def detected(self, result: np.ndarray, rect: np.ndarray) -> bool:
        """Whether the detector finds a face at the dst face's place in the result: in a crop twice
        the face's size, shrunk so the face is about 160 px (the HOG detector's sweet spot)."""
        h, w = result.shape[:2]
        cx, cy = (rect[0] + rect[2]) / 2, (rect[1] + rect[3]) / 2
        side = max(rect[2] - rect[0], rect[3] - rect[1])
        x0, y0 = int(max(0, cx - side)), int(max(0, cy - side))
        x1, y1 = int(min(w, cx + side)), int(min(h, cy + side))
        scale = min(1.0, 160 / max(side, 1))
        crop = cv2.resize(result[y0:y1, x0:x1], None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        shifted = (rect - np.array([x0, y0, x0, y0])) * scale
        return any(iou(np.asarray(box, float), shifted) > 0.3 for box, _ in self.detector.detect(crop))

    def score(self, index: int, result: np.ndarray, dst: np.ndarray, face: DstFace | None,
              previous: tuple[np.ndarray, np.ndarray] | None) -> dict:  # fmt: skip
        """One frame's figures; `previous` is the (result, dst) frame before it, for jitter and
        flicker, whose landmarks are placed in this frame's box."""
        record: dict = {"frame": index, "dst_face": face is not None}
        if face is None:
            everywhere = np.ones(dst.shape[:2], bool)
            record["background_psnr"] = metrics.psnr(result, dst, everywhere)
            return record
        dst_lm = self.landmarks(dst, face.rect)
        res_lm = self.landmarks(result, face.rect)
        regions = metrics.face_regions(dst_lm, dst.shape)
        record |= {
            "box": [round(float(v), 1) for v in face.rect],
            "covered": float(metrics.changed(result, dst, regions["face"])),
            "detected": float(self.detected(result, face.rect)),
            "nme": metrics.nme(res_lm, dst_lm),
            "pose_deg": metrics.pose_difference(res_lm, dst_lm, dst.shape),
            "background_psnr": metrics.psnr(result, dst, regions["outside"]),
            "seam": metrics.seam(result, dst, regions["band"]),
            "delta_e": metrics.color_difference(result, dst, regions["inner"]),
            "sharpness": metrics.sharpness(result, dst, regions["inner"]),
        }
        own = descriptor(dst, dst_lm)
        mine = descriptor(result, res_lm)
        record["own_distance"] = float(np.linalg.norm(mine - own))
        if self.centroid is not None:
            to_src = float(np.linalg.norm(mine - self.centroid))
            record |= {"src_distance": to_src, "swapped": float(to_src < record["own_distance"]),
                       "src_match": float(to_src <= SAME_PERSON)}  # fmt: skip
        if previous is not None:
            res_before, dst_before = previous
            lm_before = (self.landmarks(res_before, face.rect), self.landmarks(dst_before, face.rect))
            record["jitter"] = metrics.jitter((lm_before[0], res_lm), (lm_before[1], dst_lm))
            box = _crop_box(dst_lm, dst.shape)
            crop = (slice(box[1], box[3]), slice(box[0], box[2]))
            flow = metrics.backward_flow(dst_before[crop], dst[crop])
            inside = regions["face"][crop]
            dst_err = metrics.warp_error(dst_before[crop], dst[crop], flow, inside)
            res_err = metrics.warp_error(res_before[crop], result[crop], flow, inside)
            # against the dst's own error (at least half a level: a still dst has almost none)
            record |= {"flicker": res_err / max(dst_err, 0.5), "warp_error": res_err,
                       "dst_warp_error": dst_err}  # fmt: skip
        return record


def _crop_box(landmarks: np.ndarray, shape: tuple[int, ...]) -> list[int]:
    """The face's box grown by an eye distance each way, inside the frame."""
    d = metrics.eye_distance(landmarks)
    lo, hi = landmarks.min(0) - d, landmarks.max(0) + d
    h, w = shape[:2]
    return [int(max(0, lo[0])), int(max(0, lo[1])), int(min(w, hi[0])), int(min(h, hi[1]))]


Job = tuple[int, np.ndarray, np.ndarray, "DstFace | None | bool", "tuple[np.ndarray, np.ndarray] | None"]
_scorer: FrameScorer | None = None  # a worker process's own


def _start_worker(centroid: np.ndarray | None) -> None:
    global _scorer
    _scorer = FrameScorer(centroid)


def _score(job: Job) -> dict:
    index, result, dst, face, previous = job
    if face is True:  # no dst faceset: find the face here
        face = _scorer.find_dst_face(dst)
    return _scorer.score(index, result, dst, face, previous)


def _jobs(ev: Evaluation, dst_faces: dict[int, DstFace] | None) -> Iterator[Job]:
    previous = None
    for index, (res, ref) in enumerate(zip(decode(ev.result), decode(ev.dst), strict=False)):
        ev.decoded += 1
        if res.shape != ref.shape:
            raise FacelabError(
                f"{ev.result} is {res.shape[1]}x{res.shape[0]} but {ev.dst} is "
                f"{ref.shape[1]}x{ref.shape[0]}: compare a result with the dst it was made from"
            )
        if index % ev.every == 0:
            face = True if dst_faces is None else dst_faces.get(index)
            yield index, res, ref, face, previous
        previous = (res, ref)


def evaluate(result: Path, dst: Path, dst_faces: dict[int, DstFace] | None, src_centroid: np.ndarray | None,
             every: int = 1, total: int | None = None, workers: int | None = None) -> Evaluation:  # fmt: skip
    """Score every `every`-th frame of `result` against the same frame of `dst` (and the frame
    before, for jitter and flicker), in `workers` processes (default: one per core; the face
    descriptor alone is most of the time). Without `dst_faces` the dst's faces are detected."""
    ev = Evaluation(result, dst, every)
    if workers is None:
        workers = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    jobs = _jobs(ev, dst_faces)
    with progress.bar(-(-total // every) if total else None, f"eval {result.name}") as bar:
        if workers <= 1:
            _start_worker(src_centroid)
            scored = map(_score, jobs)
        else:
            ctx = mp.get_context("fork" if hasattr(os, "fork") else "spawn")
            pool = ctx.Pool(workers, initializer=_start_worker, initargs=(src_centroid,))
            scored = _bounded(pool, jobs, 2 * workers)
        try:
            for record in scored:
                ev.frames.append(record)
                bar.update(1)
        finally:
            if workers > 1:
                pool.terminate()
    if not ev.decoded:
        raise FacelabError(f"{result} has no frames: make the video again with `facelab make-video`")
    return ev


def _bounded(pool, jobs: Iterator[Job], window: int) -> Iterator[dict]:
    """pool.imap with at most `window` jobs in flight: frames are large, videos long."""
    pending: deque = deque()
    for job in jobs:
        pending.append(pool.apply_async(_score, (job,)))
        if len(pending) >= window:
            yield pending.popleft().get()
    while pending:
        yield pending.popleft().get()


def src_centroid_of_faceset(faces, most: int = 64) -> np.ndarray:
    """The mean descriptor of up to `most` aligned src faces, spread over the set."""
    from facelab.faces.identity import face_descriptors

    if not faces:
        raise FacelabError("the src faceset is empty: extract src faces, or give --src videos or photos")
    picked = [faces[i] for i in np.linspace(0, len(faces) - 1, min(most, len(faces))).round().astype(int)]
    return face_descriptors(picked).mean(0)


def src_centroid_of_media(paths: list[Path], per_video: int = 24) -> np.ndarray:
    """The mean descriptor of the largest face in each photo, and in frames spread over each video."""
    from facelab.media.images import read_image
    from facelab.media.probe import probe_video

    scorer = FrameScorer(None)
    found = []
    for path in paths:
        if not path.is_file():
            raise FacelabError(f"--src {path}: no such file: give a src video or photos")
        if path.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp", ".webp"):
            images = [read_image(path)]
        else:
            count = probe_video(path).frame_count
            spread = np.linspace(0, max(0, count - 1), min(per_video, max(1, count)))
            wanted = set(spread.astype(int).tolist())
            images = [f for i, f in enumerate(decode(path)) if i in wanted]
        for image in images:
            face = scorer.find_dst_face(image)
            if face is not None:
                found.append(descriptor(image, scorer.landmarks(image, face.rect)))
    if not found:
        raise FacelabError(
            f"no face found in --src {', '.join(map(str, paths))}: give videos or photos of the src person"
        )
    return np.mean(found, 0)
