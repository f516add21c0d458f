"""The merge's quality steps (issue 19) on real frames: the inward feather, the steady placement,
the bounded detail restoration and rct's colour bound; and training's advice on the model's size."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

from facelab.color import rct
from facelab.faces.align import face_transform
from facelab.merge.blend import merge_frame, restore_detail
from facelab.merge.pipeline import (
    FramePlan,
    MergeModel,
    _track,
    cut_faces,
    plan_frames,
    render_frame,
    steady_transform,
    temporal_blend,
)
from facelab.merge.session import settings_hash
from facelab.merge.settings import validate
from facelab.models.folder import ModelFolder
from facelab.workspace import Workspace


@pytest.fixture(scope="module")
def model(trained_ws: Path) -> MergeModel:
    return MergeModel(ModelFolder.of(trained_ws / "model", "m", "Quick96"))


@pytest.fixture(scope="module")
def plans(trained_ws: Path, model: MergeModel) -> list[FramePlan]:
    return plan_frames(Workspace(trained_ws), model.face_type)


def _merge(model: MergeModel, plan: FramePlan, s: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    frame = cv2.imread(str(plan.path))
    cut = cut_faces(frame, plan, model.res, model.face_type, s)
    faces = model.faces(frame, cut, *model.predict(np.stack([c["dst_crop"] for c in cut])), s)
    return (frame, *merge_frame(frame, faces, s))


def _hull(landmarks: np.ndarray, shape: tuple[int, ...], grow: int) -> np.ndarray:
    hull = np.zeros(shape[:2], np.uint8)
    cv2.fillConvexPoly(hull, cv2.convexHull(np.round(landmarks).astype(np.int32)), 1)
    return cv2.dilate(hull, np.ones((2 * grow + 1, 2 * grow + 1), np.uint8)) > 0


@pytest.mark.parametrize("mask_mode", ["dst", "learned-prd*learned-dst"])
def test_the_inward_feather_leaves_the_frame_outside_the_mask_untouched(model, plans, mask_mode: str):
    plan = plans[60]
    s = validate({"mask_mode": mask_mode, "restore_detail": 0, "feather": "inward"})
    frame, inward, inward_mask = _merge(model, plan, s)
    _, centred, centred_mask = _merge(model, plan, s | {"feather": "centred"})
    _, _, sharp_mask = _merge(model, plan, s | {"blur": 0})
    # No pixel takes more of the face than the unblurred mask gave it (1/255: the mask's rounding).
    assert (inward_mask.astype(int) <= sharp_mask.astype(int) + 1).all()
    assert (centred_mask.astype(int) > sharp_mask.astype(int) + 8).sum() > 1000  # the test can fail
    if mask_mode == "dst":  # the mask is the landmark hull: nothing outside it moves
        mat = face_transform(plan.faces[0], model.res, model.face_type)
        crop_pixel = 1 / np.sqrt(abs(np.linalg.det(mat[:, :2])))  # frame pixels per crop pixel
        # The hull is drawn at the crop's resolution: 2 of its pixels of rounding.
        outside = ~_hull(plan.faces[0], frame.shape, int(np.ceil(2 * crop_pixel)))
        assert np.array_equal(inward[outside], frame[outside])
        assert (np.abs(centred[outside].astype(int) - frame[outside]).max(axis=-1) > 4).sum() > 500


def _corners(mat: np.ndarray, res: int) -> np.ndarray:
    corners = np.array([[0, 0, 1], [res, 0, 1], [res, res, 1], [0, res, 1]], np.float64)
    return corners @ cv2.invertAffineTransform(mat).T


def _placements(sequence: list[np.ndarray], radius: int, model: MergeModel) -> np.ndarray:
    seq = [FramePlan(i + 1, Path(f"{i + 1:05d}.jpg"), [lm]) for i, lm in enumerate(sequence)]
    _track(seq)
    return np.array([_corners(steady_transform(p.faces[0], p.track, radius, model.res, model.face_type),
                              model.res) for p in seq])  # fmt: skip


def test_a_steady_placement_calms_a_shaking_face_and_follows_a_fast_one(plans, model: MergeModel):
    rng = np.random.default_rng(0)
    base = plans[60].faces[0]
    # A face that holds still, its landmarks shaking by a pixel or two (a detector's noise).
    shaking = [base + rng.normal(0, 1.0, base.shape) + rng.normal(0, 1.0, 2) for _ in range(40)]
    raw, steady = _placements(shaking, 0, model), _placements(shaking, 3, model)
    motion = lambda p: np.linalg.norm(np.diff(p, axis=0), axis=-1).mean()  # noqa: E731
    assert motion(steady) < 0.5 * motion(raw), (motion(steady), motion(raw))
    # A face moving 12 px a frame: the placement follows its own landmarks (no lag, no smear).
    moving = [base + (12.0 * i, 0.0) + rng.normal(0, 1.0, base.shape) for i in range(40)]
    raw, steady = _placements(moving, 0, model), _placements(moving, 3, model)
    assert np.abs(steady - raw).max() < 0.5, np.abs(steady - raw).max()


def test_detail_restoration_sharpens_within_the_dst_contrast(plans, model: MergeModel):
    plan = plans[60]
    frame = cv2.imread(str(plan.path)).astype(np.float32) / 255
    x0, y0 = np.floor(plan.faces[0].min(0)).astype(int)
    x1, y1 = np.ceil(plan.faces[0].max(0)).astype(int)
    dst = frame[y0:y1, x0:x1]
    soft = cv2.GaussianBlur(dst, (0, 0), 1.0)  # what an upscaled model face looks like
    where = np.ones(dst.shape[:2], bool)
    out = restore_detail(soft, dst, where, scale_up=3.0, strength=1.0)

    def sharpness(img: np.ndarray) -> float:
        return float(cv2.Laplacian(cv2.cvtColor(img, cv2.COLOR_BGR2GRAY), cv2.CV_32F).var())

    ratio_before, ratio_after = sharpness(soft) / sharpness(dst), sharpness(out) / sharpness(dst)
    assert out.dtype == np.float32
    assert ratio_after > ratio_before + 0.3, (ratio_before, ratio_after)
    assert ratio_after <= 1.05
    k = np.ones((5, 5), np.uint8)  # the window restore_detail uses at this scale (2 * ceil(1.5) + 1)
    contrast = (cv2.dilate(dst, k) - cv2.erode(dst, k)) / 2
    assert (np.abs(out - soft) <= contrast + 1e-6).all()  # no more contrast than the dst has there
    assert (out >= cv2.erode(soft, k) - 1e-6).all() and (out <= cv2.dilate(soft, k) + 1e-6).all()  # no halo
    assert np.array_equal(restore_detail(dst, dst, where, 3.0, 1.0), dst)  # as sharp as the dst: left alone


def test_rct_adds_no_colour_that_neither_face_has(plans):
    frame = cv2.imread(str(plans[60].path)).astype(np.float32) / 255
    lm = plans[60].faces[0]
    x0, y0 = np.floor(lm.min(0)).astype(int)
    x1, y1 = np.ceil(lm.max(0)).astype(int)
    dst = frame[y0:y1, x0:x1]
    rng = np.random.default_rng(1)
    # A blurry, nearly grey prediction: its chroma spread is a small fraction of the dst's.
    grey = cv2.cvtColor(cv2.GaussianBlur(dst, (0, 0), 3), cv2.COLOR_BGR2GRAY)
    grey = cv2.cvtColor(grey, cv2.COLOR_GRAY2BGR)
    face = np.clip(grey + rng.normal(0, 0.002, grey.shape).astype(np.float32), 0, 1)
    lab = [cv2.cvtColor(img, cv2.COLOR_BGR2LAB).reshape(-1, 3) for img in (face, dst)]
    assert lab[0][:, 1:].std(0).max() < 0.2 * lab[1][:, 1:].std(0).min()
    lo = np.minimum(*(np.percentile(x, 0.5, 0) for x in lab))
    hi = np.maximum(*(np.percentile(x, 99.5, 0) for x in lab))
    out = cv2.cvtColor(rct(face, dst), cv2.COLOR_BGR2LAB).reshape(-1, 3)
    assert (out[:, 1:] >= lo[1:] - 0.5).all() and (out[:, 1:] <= hi[1:] + 0.5).all()  # 0.5: Lab round trip


def test_training_says_when_the_dst_faces_are_far_larger_than_the_model(trained_ws: Path):
    """dst_1's faces fill about 330 px of their frames: Quick96's 96 px face is upscaled 3.4x."""
    from facelab.train.setup import resolution_advice

    aligned = trained_ws / "data_dst" / "aligned"
    advice = resolution_advice(aligned, 96, "full_face")
    assert advice and "3.4x this model's 96 px" in advice and "--model saehd" in advice, advice
    assert "--opt resolution=320" in advice
    assert resolution_advice(aligned, 256, "full_face") is None


def _shaken_cut(frame: np.ndarray, plan: FramePlan, dx: float, model: MergeModel) -> dict:
    """The face's cut with its placement moved `dx` pixels, as a shaking detector would place it."""
    s = validate({"stabilise": 0})
    moved = FramePlan(plan.number, plan.path, [plan.faces[0] + (dx, 0.0)])
    return cut_faces(frame, moved, model.res, model.face_type, s)[0]


def test_temporal_blending_calms_a_wobbling_prediction_and_keeps_a_fast_change(plans, model: MergeModel):
    plan = plans[60]
    frame = cv2.imread(str(plan.path))
    rng = np.random.default_rng(1)
    cuts = [_shaken_cut(frame, plan, rng.normal(0, 1.5), model) for _ in range(30)]
    # The model's wobble: a fresh error in every frame's prediction of the same still face.
    clean = model.predict(np.stack([c["dst_crop"] for c in cuts]))
    noisy = [tuple(np.clip(x[i] + rng.normal(0, 0.03, x[i].shape), 0, 1).astype(np.float32) for x in clean)
             for i in range(len(cuts))]  # fmt: skip
    blended = [temporal_blend(cuts[i], cuts[i - 1], noisy[i], noisy[i - 1], 0.5) for i in range(1, len(cuts))]

    def change(faces: list[tuple]) -> float:  # frame-to-frame change of the face, in this crop
        pairs = zip(faces, faces[1:], strict=False)
        return float(np.mean([np.abs(a[0] - b[0])[8:-8, 8:-8].mean() for a, b in pairs]))

    assert change(blended) < 0.6 * change(noisy[1:]), (change(blended), change(noisy[1:]))
    # A fast change (the mouth opens: the dst crop differs a lot in one region): there the result is
    # this frame's prediction alone, not a smear of the two.
    before, now = dict(cuts[0]), dict(cuts[0])
    now["dst_crop"] = before["dst_crop"].copy()
    r = model.res
    region = (slice(r // 2, r - 4), slice(r // 4, 3 * r // 4))
    now["dst_crop"][region] = np.clip(now["dst_crop"][region] + 0.3, 0, 1)
    out = temporal_blend(now, before, noisy[1], noisy[0], 0.9)
    inner = (slice(r // 2 + 6, r - 10), slice(r // 4 + 6, 3 * r // 4 - 6))
    assert np.abs(out[0][inner] - noisy[1][0][inner]).max() < 1e-3
    # Where nothing changed, the previous prediction has its full share.
    still = (slice(4, r // 4), slice(r // 4, 3 * r // 4))
    expected = 0.1 * noisy[1][0][still] + 0.9 * noisy[0][0][still]
    assert np.abs(out[0][still] - expected).mean() < 0.01


def test_a_temporal_merge_uses_the_previous_frame_only_where_there_is_one(plans, model: MergeModel):
    first = next(p for p in plans if p.faces and p.previous is None)
    later = next(p for p in plans if p.previous is not None)
    on, off = validate({"temporal": 50}), validate({"temporal": 0})
    assert np.array_equal(render_frame(model, first, on)[0], render_frame(model, first, off)[0])
    assert not np.array_equal(render_frame(model, later, on)[0], render_frame(model, later, off)[0])
    prev = later.previous.path
    assert settings_hash(on, "m", later.path, prev) != settings_hash(on, "m", later.path, None)
