"""Steps 3 and 4: frames -> aligned faces with embedded metadata (+ debug images).

Faces are followed from frame to frame, so a frame's result depends on the frames before it.
To make that independent of how the work is split (worker count, an interrupted run), the
frames are cut into fixed segments of `SEGMENT` frames; each segment is processed on its own,
starting `WARMUP` frames early (followed, not written) so that tracks and smoothing are already
settled at its first frame. A worker process takes one segment at a time and reads ahead on a
thread while it computes. Every output is written to a temporary name and renamed, and a frame
is recorded in the journal (`aligned/.extract.jsonl`) only after its files exist. A rerun after
a kill redoes each unfinished segment from its warm-up, writing only the frames not finished,
so its faces are byte for byte those of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import queue
import re
import sys
import time
import traceback
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import cv2
import numpy as np

from facelab import locks, progress
from facelab.errors import FacelabError
from facelab.faces import meta
from facelab.faces.align import (
    FACE_TYPE_NAMES,
    FACE_TYPES,
    crop_quad,
    face_transform,
    face_type_name,
    transform_points,
    warp_face,
)
from facelab.faces.detect import DEFAULT_DETECTOR, DETECTORS, Face, create_detector, landmark_model
from facelab.faces.faceset import editing
from facelab.faces.track import FaceFinder
from facelab.fsutil import fsync_dir, is_file_name, parse_json, remove_temps_in, write_bytes_atomic
from facelab.media.images import DamagedImage, read_image
from facelab.options import Option
from facelab.procs import die_with
from facelab.workspace import IMAGE_EXTS, image_files

JOURNAL = ".extract.jsonl"
SEGMENT = 96  # frames processed as one unit (see the module docstring)
WARMUP = 8  # frames followed before a segment's first frame
NO_FACE_LIST = "no_face_frames.txt"
_DIGITS = re.compile(r"(\d+)")


# The settings of steps 3-4, for the flags, the prompts and the UI's extraction form.
OPTIONS = [
    Option("face_type", str, "whole", "area around the face to keep", choices=FACE_TYPE_NAMES,
           normalize=face_type_name),
    Option("max_faces", int, 0, "faces per frame, largest first; 0 = all", range=(0, 100)),
    Option("size", int, 512, "aligned image size in pixels (768 for head)", range=(256, 2048)),
    Option("jpeg_quality", int, 90, "JPEG quality of aligned faces", range=(1, 100)),
    Option("image_format", str, "jpg", "aligned image type", choices=("jpg", "png"), flags=("--format",)),
    Option("detector", str, DEFAULT_DETECTOR, "face detector", choices=tuple(DETECTORS)),
    Option("debug_images", bool, False, "write aligned_debug/<frame>.jpg", switch=True),
    Option("smooth", bool, False, "smooth landmarks over time", switch=True),
]  # fmt: skip
BY_NAME = {o.name: o for o in OPTIONS}


@dataclass
class ExtractOptions:
    face_type: str = "whole_face"
    max_faces: int = 0
    size: int = 512
    jpeg_quality: int = 90
    detector: str = DEFAULT_DETECTOR
    image_format: str = "jpg"
    debug_images: bool = False
    smooth_fps: float | None = None  # landmark smoothing for video frames (dst)
    workers: int = field(default_factory=lambda: os.cpu_count() or 1)

    def settings(self) -> dict:
        """What must match for a rerun to continue an earlier extraction."""
        d = asdict(self)
        for transient in ("workers", "debug_images"):
            d.pop(transient)
        return d


@dataclass
class ExtractSummary:
    frames: int = 0  # frames in the folder
    processed: int = 0  # frames done in this run
    skipped: int = 0  # frames already done by an earlier run
    faces: int = 0  # faces written in this run
    no_face: list[str] = field(default_factory=list)  # all frames without a face
    unreadable: list[str] = field(default_factory=list)
    replaced: int = 0  # earlier aligned faces removed by --overwrite
    ignored_files: list[str] = field(default_factory=list)
    seconds: float = 0.0


def natural_key(path: Path) -> list:
    return [int(t) if t.isdigit() else t for t in _DIGITS.split(path.name)]


def list_frames(frames_dir: Path) -> tuple[list[Path], list[str]]:
    """Image files to extract from, and the names of other files that were ignored."""
    if not frames_dir.is_dir():
        raise FacelabError(f"{frames_dir} does not exist: run `facelab extract-frames` first")
    frames, ignored = [], []
    for p in frames_dir.iterdir():
        if not p.is_file() or p.name.startswith("."):
            continue
        (frames if p.suffix.lower() in IMAGE_EXTS else ignored).append(p)
    if not frames:
        raise FacelabError(f"{frames_dir} holds no frames (.jpg/.png): run `facelab extract-frames` first")
    return sorted(frames, key=natural_key), sorted(p.name for p in ignored)


def face_name(frame: Path, k: int, fmt: str) -> str:
    return f"{frame.stem}_{k}.{fmt}"


# ------------------------------------------------------------------------------------- journal


def read_journal(aligned_dir: Path) -> tuple[dict | None, dict[str, int]]:
    """(settings, {frame name: faces written}); tolerates a torn last line from a kill, and skips
    lines that are not records of ours."""
    path = aligned_dir / JOURNAL
    if not path.exists():
        return None, {}
    settings, done = None, {}
    for line in path.read_text(errors="replace").splitlines():
        try:
            rec = parse_json(line)
        except ValueError:
            continue
        if not isinstance(rec, dict):
            continue
        if isinstance(rec.get("settings"), dict):
            settings = rec["settings"]
        elif is_file_name(rec.get("frame")) and type(rec.get("faces")) is int and 0 <= rec["faces"] <= 10_000:
            done[rec["frame"]] = rec["faces"]
    return settings, done


def earlier_options(aligned_dir: Path) -> ExtractOptions | None:
    """The settings of the extraction already in `aligned_dir` (a rerun's defaults, so that it
    continues), or None when there is none or its journal is not ours."""
    saved = read_journal(aligned_dir)[0]
    if not saved:
        return None
    fields = {k: v for k, v in saved.items() if k in ExtractOptions.__dataclass_fields__}
    try:
        for name, value in fields.items():
            if name in BY_NAME and name != "face_type":
                BY_NAME[name].from_json(value)
        smooth = fields.get("smooth_fps")
        if smooth is not None and not (type(smooth) in (int, float) and 0 < smooth < 1000):
            return None
        was = ExtractOptions(**fields)
    except (TypeError, ValueError):
        return None
    return was if was.face_type in FACE_TYPES else None


def _outputs_valid(aligned_dir: Path, frame: Path, faces: int, fmt: str) -> bool:
    for k in range(faces):
        try:
            meta.read(aligned_dir / face_name(frame, k, fmt))
        except meta.MetadataError:
            return False
    return True


# ------------------------------------------------------------------------------------- drawing


def draw_debug(image: np.ndarray, faces: list[Face], mats: list[np.ndarray], size: int) -> np.ndarray:
    """Landmarks green, detector box blue, aligned crop red with a mark on its top edge (BGR)."""
    out = image.copy()
    thick = max(1, round(max(image.shape[:2]) / 500))
    for face, mat in zip(faces, mats, strict=True):
        x0, y0, x1, y1 = (int(round(v)) for v in face.rect)
        cv2.rectangle(out, (x0, y0), (x1, y1), (255, 0, 0), thick + 1)
        quad = crop_quad(mat, size)
        cv2.polylines(out, [np.round(quad).astype(np.int32)], True, (0, 0, 255), thick + 1, cv2.LINE_AA)
        top_mid, centre = (quad[0] + quad[1]) / 2, quad.mean(0)
        outward = (top_mid - centre) / (np.linalg.norm(top_mid - centre) + 1e-6)
        along = (quad[1] - quad[0]) / (np.linalg.norm(quad[1] - quad[0]) + 1e-6)
        mark = max(8.0, np.linalg.norm(quad[1] - quad[0]) * 0.05)
        tri = np.array([top_mid - along * mark, top_mid + along * mark, top_mid + outward * mark * 1.5])
        cv2.fillPoly(out, [np.round(tri).astype(np.int32)], (0, 0, 255), cv2.LINE_AA)
        pts = np.round(face.landmarks).astype(np.int32)
        for lo, hi, closed in (
            (0, 17, False),
            (17, 22, False),
            (22, 27, False),
            (27, 31, False),
            (31, 36, False),
            (36, 42, True),
            (42, 48, True),
            (48, 60, True),
            (60, 68, True),
        ):
            cv2.polylines(out, [pts[lo:hi]], closed, (0, 255, 0), thick, cv2.LINE_AA)
        for x, y in pts:
            cv2.circle(out, (int(x), int(y)), thick + 1, (0, 255, 0), -1, cv2.LINE_AA)
    return out


def encode_image(image: np.ndarray, fmt: str, quality: int) -> bytes:
    params = [cv2.IMWRITE_JPEG_QUALITY, quality] if fmt == "jpg" else [cv2.IMWRITE_PNG_COMPRESSION, 3]
    ok, buf = cv2.imencode(f".{fmt}", image, params)
    if not ok:
        raise FacelabError(f"could not encode a {fmt} image")
    return buf.tobytes()


# ------------------------------------------------------------------------------------- workers


def _read(path: Path) -> np.ndarray | None:
    try:
        return read_image(path)
    except DamagedImage:
        return None


def _frame_number(path: Path) -> int | None:
    digits = _DIGITS.findall(path.stem)
    return int(digits[-1]) if digits else None


@dataclass
class Segment:
    warmup: list[Path]  # followed only, to settle tracks and smoothing
    frames: list[Path]
    write: set[str]  # names of the frames to write (the others are finished)


def segments(frames: list[Path], finished: set[str]) -> list[Segment]:
    """The fixed segments of `frames` that still have unfinished frames."""
    out = []
    for start in range(0, len(frames), SEGMENT):
        part = frames[start : start + SEGMENT]
        todo = {f.name for f in part} - finished
        if todo:
            out.append(Segment(frames[max(0, start - WARMUP) : start], part, todo))
    return out


def process_segment(seg: Segment, opts: ExtractOptions, aligned_dir: Path, debug_dir: Path | None, report):
    """Extract faces from one segment; `report(name, faces, readable)` after each frame written."""
    finder = FaceFinder(create_detector(opts.detector), landmark_model(), max_faces=opts.max_faces,
                        smooth_fps=opts.smooth_fps)  # fmt: skip
    last_number = None
    frames = seg.warmup + seg.frames
    with ThreadPoolExecutor(1) as reader:
        for i, (frame, image) in enumerate(zip(frames, reader.map(_read, frames), strict=True)):
            number = _frame_number(frame)
            if last_number is None or number is None or number != last_number + 1:
                finder.reset()  # a gap: do not follow faces across it
            last_number = number
            write = i >= len(seg.warmup) and frame.name in seg.write
            if image is None:
                finder.reset()
                if write:
                    report(frame.name, 0, False)
                continue
            faces = finder.process(image)
            if not write:
                continue
            mats = [face_transform(f.landmarks, opts.size, opts.face_type) for f in faces]
            for k, (face, mat) in enumerate(zip(faces, mats, strict=True)):
                aligned = warp_face(image, mat, opts.size)
                info = meta.FaceMeta(
                    face_type=opts.face_type,
                    size=opts.size,
                    landmarks=transform_points(face.landmarks, mat),
                    source_filename=frame.name,
                    source_rect=[float(v) for v in face.rect],
                    source_landmarks=face.landmarks,
                    image_to_face_mat=mat,
                    extra={"detector": opts.detector, "tracked": face.tracked,
                           "source_size": [image.shape[1], image.shape[0]]},
                )  # fmt: skip
                data = meta.embed(encode_image(aligned, opts.image_format, opts.jpeg_quality), info)
                write_bytes_atomic(aligned_dir / face_name(frame, k, opts.image_format), data, fsync=False)
            _remove_stale(aligned_dir, frame, len(faces), opts.image_format)
            if debug_dir is not None:
                debug = draw_debug(image, faces, mats, opts.size)
                write_bytes_atomic(
                    debug_dir / f"{frame.stem}.jpg", encode_image(debug, "jpg", 75), fsync=False
                )
            report(frame.name, len(faces), True)


def _remove_stale(aligned_dir: Path, frame: Path, faces: int, fmt: str) -> None:
    k = faces
    while True:
        stale = aligned_dir / face_name(frame, k, fmt)
        if not stale.exists():
            return
        stale.unlink()
        k += 1


def _worker(owner, segs, tasks, opts, aligned_dir, debug_dir, out_q) -> None:
    die_with(owner)
    locks.forget_in_child()
    try:
        while (k := tasks.get()) is not None:
            process_segment(segs[k], opts, aligned_dir, debug_dir, lambda *msg: out_q.put(("frame", *msg)))
        out_q.put(("done",))
    except BaseException as exc:  # report, so the parent can stop cleanly
        out_q.put(("error", f"{type(exc).__name__}: {exc}", traceback.format_exc()))


# ------------------------------------------------------------------------------------- the step


def extract_faces(
    frames_dir: Path,
    aligned_dir: Path,
    opts: ExtractOptions,
    debug_dir: Path | None = None,
    overwrite: bool = False,
) -> ExtractSummary:
    with editing(aligned_dir, f"extract-faces {aligned_dir.parent.name.removeprefix('data_')}"):
        return _extract(frames_dir, aligned_dir, opts, debug_dir, overwrite)


def _extract(frames_dir, aligned_dir, opts, debug_dir, overwrite) -> ExtractSummary:
    start = time.perf_counter()
    frames, ignored = list_frames(frames_dir)
    summary = ExtractSummary(frames=len(frames), ignored_files=ignored)
    aligned_dir.mkdir(parents=True, exist_ok=True)
    if debug_dir is not None:
        debug_dir.mkdir(parents=True, exist_ok=True)
        remove_temps_in(debug_dir)  # a killed run's half-written debug images (editing() cleared aligned/)

    settings, done = read_journal(aligned_dir)
    existing = image_files(aligned_dir)
    if overwrite:
        summary.replaced = len(existing)
        for p in existing + _debug_images(debug_dir):
            p.unlink()
        with contextlib.suppress(FileNotFoundError):
            (aligned_dir / JOURNAL).unlink()
        settings, done = None, {}
    elif settings is None and existing:
        raise FacelabError(
            f"{aligned_dir} already holds {len(existing)} faces from another extraction: "
            "pass --overwrite to replace them, or move them away"
        )
    elif settings is not None and settings != opts.settings():
        changed = sorted(k for k in opts.settings() if settings.get(k) != opts.settings()[k])
        raise FacelabError(
            f"{aligned_dir} was extracted with other settings ({', '.join(changed)}): "
            "use the same options to continue, or pass --overwrite to start again"
        )

    finished = {
        f.name
        for f in frames
        if f.name in done and _outputs_valid(aligned_dir, f, done[f.name], opts.image_format)
    }
    summary.skipped = len(finished)
    faces_by_frame = {name: done[name] for name in finished}

    with open(aligned_dir / JOURNAL, "a") as journal:
        if settings is None:  # on disk before any face: else a kill could leave faces of no known run
            journal.write(json.dumps({"settings": opts.settings()}) + "\n")
            journal.flush()
            os.fsync(journal.fileno())
        if todo := segments(frames, finished):
            _run_workers(todo, opts, aligned_dir, debug_dir, journal, summary, faces_by_frame)
        journal.flush()
        os.fsync(journal.fileno())
    fsync_dir(aligned_dir)

    summary.no_face = [f.name for f in frames if faces_by_frame.get(f.name, 0) == 0]
    write_bytes_atomic(aligned_dir / NO_FACE_LIST, "".join(n + "\n" for n in summary.no_face).encode())
    summary.seconds = time.perf_counter() - start
    return summary


def _debug_images(debug_dir: Path | None) -> list[Path]:
    if debug_dir is None or not debug_dir.is_dir():
        return []
    return [p for p in debug_dir.iterdir() if p.suffix.lower() == ".jpg"]


def _run_workers(todo: list[Segment], opts, aligned_dir, debug_dir, journal, summary, faces_by_frame) -> None:
    n = max(1, min(opts.workers, len(todo)))

    def record(name: str, faces: int, readable: bool) -> None:
        faces_by_frame[name] = faces
        summary.processed += 1
        summary.faces += faces
        if not readable:
            summary.unreadable.append(name)
        journal.write(json.dumps({"frame": name, "faces": faces}) + "\n")
        journal.flush()
        pbar.update(1)
        pbar.set_postfix(faces=summary.faces, refresh=False)

    with progress.bar(sum(len(seg.write) for seg in todo), "extracting faces") as pbar:
        if n == 1:
            for seg in todo:
                process_segment(seg, opts, aligned_dir, debug_dir, record)
            return
        ctx = mp.get_context("fork" if hasattr(os, "fork") else "spawn")
        out_q, tasks = ctx.Queue(), ctx.Queue()
        for k in [*range(len(todo)), *[None] * n]:
            tasks.put(k)
        args = (os.getpid(), todo, tasks, opts, aligned_dir, debug_dir, out_q)
        procs = [ctx.Process(target=_worker, args=args, daemon=True) for _ in range(n)]
        for p in procs:
            p.start()
        try:
            running = len(procs)
            while running:
                try:
                    msg = out_q.get(timeout=5)
                except queue.Empty:
                    if not any(p.is_alive() for p in procs):
                        raise FacelabError("a face extraction worker died; run again to continue") from None
                    continue
                if msg[0] == "frame":
                    record(*msg[1:])
                elif msg[0] == "done":
                    running -= 1
                else:
                    if os.environ.get("FACELAB_DEBUG"):
                        print(msg[2], file=sys.stderr)
                    raise FacelabError(f"face extraction failed in a worker: {msg[1]}")
        finally:
            for p in procs:
                if p.is_alive():
                    p.terminate()
                p.join()
