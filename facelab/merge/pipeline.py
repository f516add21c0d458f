"""Merge orchestration: every dst frame, its aligned faces, the model, and the blend workers.

A reader thread decodes frames and cuts the faces; the main thread runs the model on batches
of faces; worker processes blend and write the PNGs. The three overlap, and a journal lets a
rerun skip frames already merged with the same settings.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import queue
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from facelab import locks, progress
from facelab.device import pick_device, pick_precision
from facelab.dfm.runtime import DFMModel
from facelab.errors import FacelabError
from facelab.faces import masks
from facelab.faces.align import FACE_TYPES, canonical_face_type, face_transform, face_type_name
from facelab.faces.faceset import load_faceset
from facelab.media.mark import Stamp, make_mark
from facelab.media.probe import read_video_record
from facelab.merge.blend import FaceInput, blend_and_write, init_worker, merge_frame, write_merged
from facelab.merge.session import JOURNAL, MergeSession, merged_by_other, read_journal, settings_hash
from facelab.merge.settings import MAX_STEADY
from facelab.models.folder import ModelFolder, find_model, load_network
from facelab.precision import choose, model_timer
from facelab.procs import clean_pool
from facelab.workspace import Workspace, numbered_images
from facelab.xseg.apply import XSegPredictor

BATCH = 8  # faces per model call
# How a .dfm without facelab's metadata crops faces: DeepFaceLive's public models are whole-face.
DFM_FACE_TYPE = "whole_face"


STEADY_TOLERANCE = 0.01  # placement change (share of the crop) at which a neighbour's weight is 1/e
# --temporal: the mean change of a dst crop pixel between two frames (0-1 intensity) at which the
# previous prediction's weight there falls to 1/e. Consecutive frames of a still face differ by about
# 0.01 (noise, compression); a mouth opening or a turn changes the pixels by 0.1 and more.
CHANGE_TOLERANCE = 0.03


@dataclass
class FramePlan:
    number: int
    path: Path
    faces: list[np.ndarray] = field(default_factory=list)  # 68x2 landmarks in frame pixels
    motion: np.ndarray | None = None  # face centre motion per frame (one-face frames)
    # One-face frames: the same face's landmarks in the frames around, {offset: landmarks}, for as
    # long as every frame in between has one face that did not jump (a cut ends the track).
    track: dict[int, np.ndarray] = field(default_factory=dict)
    previous: FramePlan | None = None  # the frame before, when its one face is this one's (track[-1])


def _track(ordered: list[FramePlan], radius: int = MAX_STEADY) -> None:
    """Fill each one-face frame's `track` with its neighbours' landmarks."""
    def face(i: int) -> np.ndarray | None:
        return ordered[i].faces[0] if 0 <= i < len(ordered) and len(ordered[i].faces) == 1 else None

    for i, plan in enumerate(ordered):
        here = face(i)
        if here is None:
            continue
        size = np.ptp(here, axis=0).max()
        for step in (-1, 1):
            last = here
            for j in range(1, radius + 1):
                lm = face(i + step * j)
                if lm is None or ordered[i + step * j].number != plan.number + step * j or (
                        np.linalg.norm(lm.mean(0) - last.mean(0)) > 0.5 * size):  # fmt: skip
                    break
                plan.track[step * j] = lm
                last = lm


def steady_transform(landmarks: np.ndarray, track: dict[int, np.ndarray], radius: int, res: int,
                     face_type: str) -> np.ndarray:  # fmt: skip
    """The frame -> crop transform of one face, averaged with its neighbours' over +-`radius` frames.
    Each neighbour weighs by its distance in frames (a Gaussian of sigma radius/2) and by how far its
    crop lies from this frame's (its corners' mean offset over the crop's size, against
    STEADY_TOLERANCE): a face that holds still keeps a steady placement, one that moves follows
    its own landmarks at once, and a rerun or a resumed merge gets the same transform."""
    mat = face_transform(landmarks, res, face_type)
    if radius <= 0 or not track:
        return mat
    corners = np.array([[0, 0, 1], [res, 0, 1], [res, res, 1], [0, res, 1]], np.float64)

    def frame_corners(m: np.ndarray) -> np.ndarray:
        return corners @ cv2.invertAffineTransform(m).T

    here = frame_corners(mat)
    size = np.linalg.norm(here[0] - here[2])
    total, weight = mat.copy(), 1.0
    for offset, lm in track.items():
        if abs(offset) > radius:
            continue
        other = face_transform(lm, res, face_type)
        moved = np.linalg.norm(frame_corners(other) - here, axis=1).mean() / size
        w = math.exp(-0.5 * (2 * offset / radius) ** 2 - (moved / STEADY_TOLERANCE) ** 2)
        total += w * other
        weight += w
    return total / weight


class MergeModel:
    """A model in inference mode: crops in, (face, face mask, dst mask) out. Either a trained model
    folder (PyTorch) or an exported `.dfm`/`.onnx` file (onnxruntime), which has no folder: its XSeg
    models are looked up in `model_root`, and `face_type` names how its faces are cropped when the
    file does not record it."""

    def __init__(self, folder: ModelFolder | Path, device: str = "auto", precision: str = "auto",
                 xseg: str | None = None, model_root: Path | None = None,
                 face_type: str | None = None, batch: int = BATCH):  # fmt: skip
        self.dfm: DFMModel | None = None
        self.channels_last, self.precision_choice = False, None
        self._xseg_name, self._xseg = xseg or "xseg", None
        if isinstance(folder, ModelFolder):
            self.device = pick_device(device)
            self.model, ckpt = load_network(folder, self.device)
            if not hasattr(self.model, "swap"):
                raise FacelabError(f"{folder} is an XSeg model: merge with a face model (--model), and name "
                                   "the XSeg model with --xseg-model")  # fmt: skip
            self._xseg_root = folder.path.parent
            self.name = folder.path.name
            self.face_type = ckpt.config["face_type"]
            self.res = int(self.model.config["resolution"])
            self._pick_precision(precision, batch)
            self.id = f"{self.name}@{ckpt.state.get('iteration')}"
            self.morphs = self.model.kind == "amp"
            self.kind, self.iteration = folder.class_name, ckpt.state.get("iteration")
            return
        self.dfm = DFMModel(folder, device)
        self.device = torch.device("cuda" if self.dfm.provider.startswith("CUDA") else "cpu")
        self._xseg_root = model_root or Path(folder).parent
        self.name = self.dfm.path.name
        self.face_type = canonical_face_type(self.dfm.face_type or face_type or DFM_FACE_TYPE)
        self.res, self.precision, self.morphs = self.dfm.res, "fp32", self.dfm.amp
        self.id = f"{self.name}@{self.dfm.digest()[:12]}"
        self.kind, self.iteration = "dfm", None

    def mark(self) -> dict:
        """The synthetic mark for what this model makes (media/mark.py)."""
        return make_mark(self.name, self.kind, self.iteration)

    def _pick_precision(self, precision: str, batch: int) -> None:
        """`auto`: the faster of fp32 and bf16 (with or without channels_last) for this model at this
        batch, measured once per machine (facelab.precision); otherwise as asked."""
        dev = self.device
        if precision != "auto" or dev.type not in ("cpu", "cuda"):
            self.precision = pick_precision(precision, dev)
            return
        bf16 = dev.type == "cpu" or torch.cuda.is_bf16_supported()
        timer = model_timer(self.model.swap, self.model, (batch, 3, self.res, self.res), dev)
        choice = choose("merge", self.model.config, batch, dev, timer, bf16)
        self.model.to(memory_format=torch.channels_last if choice.channels_last else torch.contiguous_format)
        self.precision, self.channels_last = choice.precision, choice.channels_last
        self.precision_choice = choice

    def xseg(self, mode: str) -> XSegPredictor:
        """The XSeg model for the xseg mask modes (loaded on first use)."""
        if self._xseg is None:
            try:
                folder = find_model(self._xseg_root, self._xseg_name, "XSeg")
            except FacelabError:
                raise FacelabError(
                    f"mask mode {mode} needs an XSeg model, and {self._xseg_root} has none named "
                    f"{self._xseg_name!r}: train one with `facelab xseg train`, or name one with --xseg-model"
                ) from None
            self._xseg = XSegPredictor(folder, str(self.device))
        return self._xseg

    def id_for(self, settings: dict) -> str:
        """What made a frame, for the journal: the model, and the XSeg model if the mask uses it."""
        mode = settings["mask_mode"]
        return f"{self.id}+{self.xseg(mode).id}" if "xseg" in mode else self.id

    def faces(self, frame: np.ndarray, cut: list[dict], pred, pmask, dmask, s: dict) -> list[FaceInput]:
        """The blend's inputs for one frame's faces (their predictions given), with the XSeg masks
        when the mask mode needs them."""
        xprd = xdst = [None] * len(cut)
        if cut and "xseg" in s["mask_mode"]:
            xprd, xdst = xseg_masks(self.xseg(s["mask_mode"]), frame, cut, pred)
        return [FaceInput(f["mat"], f["dst_crop"], pred[i], pmask[i], dmask[i], f["hull"], f["motion"],
                          xprd[i], xdst[i]) for i, f in enumerate(cut)]  # fmt: skip

    @torch.inference_mode()
    def predict(
        self, crops: np.ndarray, morph: np.ndarray | float = 1.0
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Faces for the crops; `morph` (per crop or one value) is AMP's share of the src identity."""
        morphs = np.broadcast_to(np.asarray(morph, np.float64), (len(crops),))
        res = crops.shape[1]
        face = np.empty((len(crops), res, res, 3), np.float32)
        mask, dst_mask = np.empty((2, len(crops), res, res), np.float32)
        # Other models ignore the morph value: one call for all crops.
        for m in np.unique(morphs) if self.morphs else [None]:
            sel = morphs == m if m is not None else slice(None)
            if self.dfm is not None:
                face[sel], mask[sel], dst_mask[sel] = self.dfm.predict(crops[sel], 1.0 if m is None else m)
                continue
            x = torch.from_numpy(np.ascontiguousarray(crops[sel].transpose(0, 3, 1, 2))).to(self.device)
            if self.channels_last:
                x = x.contiguous(memory_format=torch.channels_last)
            ctx = torch.autocast(self.device.type, dtype=torch.bfloat16) if self.precision == "bf16" else (
                contextlib.nullcontext())  # fmt: skip
            with ctx:
                out = self.model.swap(x, float(m)) if m is not None else self.model.swap(x)
            f, mk, dm = (t.float().cpu().numpy() for t in out)
            face[sel], mask[sel], dst_mask[sel] = f.transpose(0, 2, 3, 1), mk[:, 0], dm[:, 0]
        return face, mask, dst_mask


def xseg_masks(xseg: XSegPredictor, frame: np.ndarray, cut: list[dict],
               pred: np.ndarray) -> tuple[list[np.ndarray], list[np.ndarray]]:  # fmt: skip
    """XSeg's masks of the predicted faces (resized to XSeg's input, as the reference does) and of the
    dst faces (cut from the frame at XSeg's own face type, then moved into the model's crop)."""
    res = pred.shape[1]
    faces = [cv2.resize(np.clip(p * 255 + 0.5, 0, 255).astype(np.uint8), (xseg.res, xseg.res),
                        interpolation=cv2.INTER_CUBIC) for p in pred[: len(cut)]]  # fmt: skip
    prd = [cv2.resize(m, (res, res), interpolation=cv2.INTER_LINEAR) for m in xseg.predict(faces)]
    mats = [face_transform(f["landmarks"], xseg.res, xseg.face_type) for f in cut]
    size, cubic = (xseg.res, xseg.res), cv2.INTER_CUBIC
    crops = [cv2.warpAffine(frame, m, size, flags=cubic, borderMode=cv2.BORDER_REPLICATE) for m in mats]
    dst = []
    for f, m, mask in zip(cut, mats, xseg.predict(crops), strict=True):
        to_crop = np.vstack([f["crop_mat"], [0, 0, 1]]) @ np.linalg.inv(np.vstack([m, [0, 0, 1]]))
        dst.append(cv2.warpAffine(mask, to_crop[:2], (res, res), flags=cv2.INTER_LINEAR))
    return prd, dst


def plan_frames(ws: Workspace, model_face_type: str) -> list[FramePlan]:
    """Every dst frame with its faces' landmarks."""
    frames_dir = ws.frames_dir("dst")
    numbered = numbered_images(frames_dir)
    if not numbered:
        raise FacelabError(f"{frames_dir} has no frames: run `facelab extract-frames dst` first")
    plans = {p.stem: FramePlan(n, p) for n, p in numbered}
    faceset = load_faceset(ws.aligned_dir("dst"))
    need = FACE_TYPES.index(model_face_type)
    for face in faceset.faces:
        if FACE_TYPES.index(face.meta.face_type) < need:
            raise FacelabError(
                f"{face.path} is a {face.meta.face_type} face but the model merges {model_face_type} faces: "
                "re-extract dst with `facelab extract-faces dst --face-type "
                f"{face_type_name(model_face_type)}`"
            )
        stem = Path(face.meta.source_filename).stem
        if stem not in plans:
            raise FacelabError(
                f"{face.path} comes from frame {face.meta.source_filename}, which is not in {frames_dir}: "
                "re-run `facelab extract-frames dst` (or move the face away)"
            )
        plans[stem].faces.append(face.meta.source_landmarks)
    ordered = [plans[p.stem] for _, p in numbered]
    centres = [f.faces[0].mean(0) if len(f.faces) == 1 else None for f in ordered]
    for i, plan in enumerate(ordered):
        prev = centres[i - 1] if i > 0 else None
        nxt = centres[i + 1] if i + 1 < len(ordered) else None
        if centres[i] is not None and (prev is not None or nxt is not None):
            a = prev if prev is not None else centres[i]
            b = nxt if nxt is not None else centres[i]
            plan.motion = (b - a) / (2 if prev is not None and nxt is not None else 1)
    _track(ordered)
    for before, plan in zip(ordered, ordered[1:], strict=False):
        if -1 in plan.track:
            plan.previous = before
    return ordered


def missing_frames(ws: Workspace, plans: list[FramePlan]) -> list[int]:
    """Frame numbers the dst video has but data_dst/ does not (deleted by hand, or by a crash of
    another tool): merge cannot make them, so make-video would stop there."""
    record = read_video_record(ws.video_info_path("dst"))
    last = max([p.number for p in plans] + [record[1] or 0 if record else 0])
    have = {p.number for p in plans}
    return [n for n in range(1, last + 1) if n not in have]


def cut_faces(frame: np.ndarray, plan: FramePlan, res: int, face_type: str, settings: dict) -> list[dict]:
    """The crop of every face (what the model sees) with its matrix, hull and motion; with --temporal,
    a one-face frame's face also carries the previous frame's cut ("previous")."""
    out = []
    k = 1 + 0.01 * settings["face_scale"]
    c = res / 2
    scale = np.array([[1 / k, 0, c - c / k], [0, 1 / k, c - c / k], [0, 0, 1]])
    for lm in plan.faces:
        if len(plan.faces) == 1:
            mat = steady_transform(lm, plan.track, settings["stabilise"], res, face_type)
        else:
            mat = face_transform(lm, res, face_type)
        crop = cv2.warpAffine(frame, mat, (res, res), flags=cv2.INTER_CUBIC, borderMode=cv2.BORDER_REPLICATE)
        pts = lm @ mat[:, :2].T + mat[:, 2]
        motion = None if plan.motion is None else tuple(mat[:, :2] @ plan.motion)
        # The face is pasted with the crop scaled about its centre: larger for face_scale > 0.
        out.append({
            "mat": (scale @ np.vstack([mat, [0, 0, 1]]))[:2],
            "crop_mat": mat,
            "landmarks": lm,
            "dst_crop": crop.astype(np.float32) / 255,
            "hull": masks.hull_mask(pts, res).astype(np.float32) / 255,
            "motion": motion,
        })  # fmt: skip
    if settings["temporal"] and plan.previous is not None and len(out) == 1:
        before = cv2.imread(str(plan.previous.path), cv2.IMREAD_COLOR)
        if before is None:
            raise FacelabError(f"{plan.previous.path} cannot be decoded: re-run `facelab extract-frames dst`")
        out[0]["previous"] = cut_faces(before, plan.previous, res, face_type, settings | {"temporal": 0})[0]
    return out


def predict_cut(model: MergeModel, cuts: list[list[dict]], settings: list[dict]) -> list[tuple]:
    """The model's (faces, masks, dst masks) for each frame's cut faces, in one batch; with
    --temporal, each face blended with the previous frame's prediction (temporal_blend)."""
    faces = [f for cut in cuts for f in cut]
    if not faces:
        return [(None, None, None) for _ in cuts]
    extra = [f["previous"] for f in faces if "previous" in f]
    morphs = [s["morph"] for cut, s in zip(cuts, settings, strict=True) for _ in cut]
    morphs += [s["morph"] for cut, s in zip(cuts, settings, strict=True) for f in cut if "previous" in f]
    crops = np.stack([f["dst_crop"] for f in faces + extra])
    pred, pmask, dmask = model.predict(crops, np.array(morphs))
    k, j, out = 0, len(faces), []
    for cut, s in zip(cuts, settings, strict=True):
        got = [pred[k : k + len(cut)], pmask[k : k + len(cut)], dmask[k : k + len(cut)]]
        for i, f in enumerate(cut):
            if "previous" in f:
                here = (got[0][i], got[1][i], got[2][i])
                got[0][i], got[1][i], got[2][i] = temporal_blend(
                    f, f["previous"], here, (pred[j], pmask[j], dmask[j]), s["temporal"] / 100)
                j += 1
        out.append(tuple(got))
        k += len(cut)
    return out


def temporal_blend(face: dict, before: dict, here: tuple, earlier: tuple, strength: float) -> tuple:
    """This frame's prediction (`here`: face, mask, dst mask) blended with the previous frame's
    (`earlier`), moved from that frame's crop onto this one's. The weight is `strength` where the dst
    crops of the two frames agree, falling off (CHANGE_TOLERANCE) where the dst face changed, so
    the model's frame-to-frame wobble is calmed and a real move is not smeared."""
    res = face["dst_crop"].shape[0]

    def square(mat: np.ndarray) -> np.ndarray:
        return np.vstack([mat, [0, 0, 1]])

    to_here = square(face["crop_mat"]) @ np.linalg.inv(square(before["crop_mat"]))

    def moved(img: np.ndarray) -> np.ndarray:
        return cv2.warpAffine(img, to_here[:2], (res, res), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)  # fmt: skip

    change = np.abs(face["dst_crop"] - moved(before["dst_crop"])).mean(axis=2)
    change = cv2.GaussianBlur(change, (0, 0), max(1.0, res / 64))
    w = (strength * np.exp(-((change / CHANGE_TOLERANCE) ** 2))).astype(np.float32)
    out = []
    for now, then in zip(here, earlier, strict=True):
        wt = w[..., None] if now.ndim == 3 else w
        out.append((1 - wt) * now + wt * moved(np.ascontiguousarray(then)))
    return tuple(out)


@dataclass
class MergeSummary:
    frames: int = 0
    merged: int = 0
    skipped: int = 0  # already merged with the same settings
    faces: int = 0
    no_face: int = 0
    missing: list[int] = field(default_factory=list)  # dst frame numbers with no frame file
    seconds: float = 0.0


def merge(ws: Workspace, model: MergeModel, session: MergeSession, workers: int | None = None,
          only: tuple[int, int] | None = None, overwrite: bool = False,
          stamp: Stamp | None = None) -> MergeSummary:  # fmt: skip
    """Merge every dst frame (or the range `only`), skipping frames done with the same settings.
    Frames another model made are replaced only with `overwrite`. The frames carry `stamp`
    (default: the model's synthetic mark, no visible label)."""
    with locks.hold(ws.merged_dir, "merge"):
        return _merge(ws, model, session, workers, only, overwrite, stamp or Stamp(model.mark()))


def _merge(ws, model, session, workers, only, overwrite, stamp: Stamp) -> MergeSummary:
    start = time.perf_counter()
    plans = plan_frames(ws, model.face_type)
    merged_dir, mask_dir = ws.merged_dir, ws.merged_mask_dir
    merged_dir.mkdir(parents=True, exist_ok=True)
    mask_dir.mkdir(parents=True, exist_ok=True)
    done, made_by = read_journal(merged_dir)
    other = merged_by_other(merged_dir, model.name, made_by)
    if other and not overwrite:
        raise FacelabError(
            f"{merged_dir} holds frames merged with {other}: merging with {model.name} would replace them. "
            "Pass --overwrite to replace them, or move the folder away first"
        )
    summary = MergeSummary(frames=len(plans), missing=missing_frames(ws, plans))
    todo = []
    for plan in plans:
        if only and not only[0] <= plan.number <= only[1]:
            continue
        s = session.for_frame(plan.number)
        previous = plan.previous.path if s["temporal"] and plan.previous is not None else None
        h = settings_hash(s, model.id_for(s) + stamp.key(), plan.path, previous)
        name = plan.path.stem
        if (
            done.get(name) == h
            and (merged_dir / f"{name}.png").exists()
            and (mask_dir / f"{name}.png").exists()
        ):
            summary.skipped += 1
            continue
        todo.append((plan, s, h))
    workers = workers or os.cpu_count() or 1
    frames_q: queue.Queue = queue.Queue(maxsize=BATCH * 2)

    def reader() -> None:
        for plan, s, h in todo:
            frame = cv2.imread(str(plan.path), cv2.IMREAD_COLOR)
            if frame is None:
                frames_q.put(
                    FacelabError(f"{plan.path} cannot be decoded: re-run `facelab extract-frames dst`")
                )
                return
            frames_q.put((plan, s, h, frame, cut_faces(frame, plan, model.res, model.face_type, s)))
        frames_q.put(None)

    threading.Thread(target=reader, daemon=True).start()
    journal = open(merged_dir / JOURNAL, "a")  # noqa: SIM115 - closed below
    pending: list[tuple[Future, str, str, int]] = []

    def collect(block: bool) -> None:
        while pending and (block or pending[0][0].done()):
            fut, name, h, nfaces = pending.pop(0)
            fut.result()
            journal.write(json.dumps({"frame": name, "hash": h, "model": model.name}) + "\n")
            journal.flush()
            summary.merged += 1
            summary.faces += nfaces
            summary.no_face += nfaces == 0
            pbar.update(1)

    with (
        clean_pool(workers, initializer=init_worker) as pool,
        progress.bar(len(todo), "merging") as pbar,
    ):
        try:
            finished = False
            while not finished:
                batch = []
                while sum(len(item[4]) for item in batch) < BATCH:
                    item = frames_q.get()
                    if isinstance(item, Exception):
                        raise item
                    if item is None:
                        finished = True
                        break
                    batch.append(item)
                predicted = predict_cut(model, [item[4] for item in batch], [item[1] for item in batch])
                for (plan, s, h, frame, cut), (pred, pmask, dmask) in zip(batch, predicted, strict=True):
                    faces = model.faces(frame, cut, pred, pmask, dmask, s) if cut else []
                    name = plan.path.stem
                    out, out_mask = merged_dir / f"{name}.png", mask_dir / f"{name}.png"
                    fut = pool.submit(blend_and_write, frame, faces, s, out, out_mask, stamp)
                    pending.append((fut, name, h, len(faces)))
                collect(block=len(pending) > 2 * workers)
            collect(block=True)
        finally:
            journal.close()
    summary.seconds = time.perf_counter() - start
    return summary


def find_plan(plans: list[FramePlan], number: int) -> FramePlan:
    plan = next((p for p in plans if p.number == number), None)
    if plan is None:
        raise FacelabError(f"there is no frame {number} (frames {plans[0].number}-{plans[-1].number})")
    return plan


def render_frame(model: MergeModel, plan: FramePlan, s: dict) -> tuple[np.ndarray, np.ndarray]:
    """One frame merged with settings `s`, in memory: (merged BGR frame, mask)."""
    frame = cv2.imread(str(plan.path), cv2.IMREAD_COLOR)
    if frame is None:
        raise FacelabError(f"{plan.path} cannot be read: the frame is missing or damaged")
    cut = cut_faces(frame, plan, model.res, model.face_type, s)
    faces = []
    if cut:
        faces = model.faces(frame, cut, *predict_cut(model, [cut], [s])[0], s)
    return merge_frame(frame, faces, s)


def preview_frame(
    ws: Workspace, model: MergeModel, session: MergeSession, number: int, out_dir: Path
) -> tuple[Path, Path]:
    """Merge one frame with the session's settings for it into `out_dir`; the session is not changed."""
    plan = find_plan(plan_frames(ws, model.face_type), number)
    out_dir.mkdir(parents=True, exist_ok=True)
    out, out_mask = out_dir / f"{plan.path.stem}.png", out_dir / f"{plan.path.stem}_mask.png"
    write_merged(*render_frame(model, plan, session.for_frame(number)), out, out_mask, Stamp(model.mark()))
    return out, out_mask


__all__ = ["MergeModel", "find_plan", "merge", "plan_frames", "preview_frame",
           "render_frame"]  # fmt: skip
