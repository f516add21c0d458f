"""XSeg's quality, measured on real faces with pasted occluders (tests/occluders.py): a hand or a
microphone is pasted into every dst frame and the aligned faces are cut again. 30 faces are
labelled with the truth (face hull minus occluder), and XSeg trains on them.
- Applied to 20 other faces, its masks must reach IoU 0.85 against the truth, and beat the
  landmark hull by 0.10.
- Merged with `xseg-dst`, the occluder's pixels must survive (PSNR >= 35 dB inside the occluder,
  against the dst frame); with the landmark hull, they must not."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from facelab.faces import masks, meta
from facelab.faces.align import warp_face
from facelab.faces.faceset import load_faceset
from facelab.models.folder import ModelFolder
from facelab.train.recipes import RECIPES
from facelab.train.trainer import TrainOptions, train
from facelab.workspace import Workspace
from facelab.xseg.apply import XSegPredictor, apply_masks
from facelab.xseg.labels import set_labels
from tests.conftest import MEDIA, run_cli
from tests.occluders import iou, occluder, textures

# A new model at 128 px learns fast with lr 1e-3 and no lr dropout (measured on this set: IoU 0.887
# after 600 iterations, 0.898 after 1000, 0.908 after 1500; at 64 px about 0.83; with the
# reference's 1e-4 and dropout, 0.59 after 300 iterations, see benchmarks/xseg.py).
OPTIONS = {"resolution": 128, "batch_size": 4, "learning_rate": 1e-3, "lr_dropout": False}
LABELLED = slice(0, 120, 4)  # 30 faces
HELD_OUT = slice(2, 120, 6)  # 20 others


@pytest.fixture(scope="module")
def occluded(trained_ws: Path, tmp_path_factory) -> dict:
    ws = tmp_path_factory.mktemp("occluded") / "ws"
    shutil.copytree(trained_ws, ws, ignore=shutil.ignore_patterns("merged*", "*.mp4"))
    rng = np.random.default_rng(1)
    texture = textures(MEDIA, 720)
    faces = sorted(load_faceset(ws / "data_dst" / "aligned").faces, key=lambda f: f.path.name)
    truth = {}
    for i, face in enumerate(faces):
        m = face.meta
        frame_path = ws / "data_dst" / Path(m.source_filename).name
        frame = cv2.imread(str(frame_path))
        poly = occluder(rng, m.landmarks, m.size)  # aligned pixels
        to_frame = cv2.invertAffineTransform(m.image_to_face_mat)
        in_frame = poly @ to_frame[:, :2].T + to_frame[:, 2]
        cover = np.zeros(frame.shape[:2], np.uint8)
        cv2.fillPoly(cover, [np.round(in_frame).astype(np.int32)], 1)
        tex = texture[rng.integers(len(texture))]
        h, w = frame.shape[:2]
        y, x = rng.integers(0, tex.shape[0] - h), rng.integers(0, tex.shape[1] - w)
        frame = np.where(cover[..., None] > 0, tex[y : y + h, x : x + w], frame)
        cv2.imwrite(str(frame_path), frame, [cv2.IMWRITE_JPEG_QUALITY, 100])
        frame = cv2.imread(str(frame_path))  # the frame as merge will read it
        aligned = warp_face(frame, m.image_to_face_mat, m.size)
        jpg = cv2.imencode(".jpg", aligned, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()
        face.path.write_bytes(meta.embed(jpg, m))
        hull = (masks.hull_mask(m.landmarks, m.size) > 127).astype(np.uint8)
        aligned_cover = cv2.warpAffine(cover, m.image_to_face_mat, (m.size, m.size), flags=cv2.INTER_NEAREST)
        truth[face.path.name] = {"true": hull * (1 - aligned_cover), "hull": hull, "frame": frame_path,
                                 "cover": cover, "dst": frame}  # fmt: skip
        if i in range(120)[LABELLED]:
            contours = cv2.findContours(hull, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0]
            outline = max(contours, key=cv2.contourArea)[:, 0].astype(float)
            set_labels(face.path, [meta.Polygon(True, outline), meta.Polygon(False, poly)])
    opts = TrainOptions(target_iter=600, arch={"resolution": 128, "base_ch": 8},
                        model_options=dict(OPTIONS), seed=1, preview=False, status_every_s=3600)  # fmt: skip
    train(Workspace(ws), RECIPES["xseg"], "xseg", opts)
    held_out = [f.path.name for f in faces[HELD_OUT]]
    return {"ws": ws, "truth": truth, "held_out": held_out}


@pytest.mark.slow
def test_xseg_masks_occluders_better_than_the_landmark_hull(occluded: dict):
    ws, truth = occluded["ws"], occluded["truth"]
    aligned = ws / "data_dst" / "aligned"
    apply_masks(aligned, XSegPredictor(ModelFolder.of(ws / "model", "xseg", "XSeg"), "cpu"))
    ours, hull = [], []
    for name in occluded["held_out"]:
        t = truth[name]
        mask = masks.decode_xseg_mask(meta.read(aligned / name).xseg_mask)
        mask = cv2.resize(mask, t["true"].shape[::-1], interpolation=cv2.INTER_LINEAR) > 127
        ours.append(iou(mask, t["true"]))
        hull.append(iou(t["hull"], t["true"]))
    print(f"IoU: XSeg {np.mean(ours):.3f} (worst {np.min(ours):.3f}), landmark hull {np.mean(hull):.3f}")
    assert np.mean(ours) >= 0.85, ours
    assert np.mean(ours) >= np.mean(hull) + 0.10, (np.mean(ours), np.mean(hull))


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b) ** 2).mean())
    return 99.0 if mse == 0 else 10 * np.log10(255**2 / mse)


@pytest.mark.slow
def test_xseg_dst_merge_keeps_the_occluder(occluded: dict):
    ws, truth = occluded["ws"], occluded["truth"]
    inside = {}
    for mode in ("xseg-dst", "dst"):
        proc = run_cli("merge", "-w", ws, "-q", "--mask-mode", mode, "--frames", "1-120", "--erode", "20",
                       "--blur", "0")  # fmt: skip
        assert proc.returncode == 0, proc.stderr
        scores = []
        for name in occluded["held_out"]:
            t = truth[name]
            merged = cv2.imread(str(ws / "data_dst" / "merged" / f"{Path(t['frame']).stem}.png"))
            covered = t["cover"] > 0
            scores.append(_psnr(merged[covered], t["dst"][covered]))
        inside[mode] = float(np.mean(scores))
    print(f"PSNR inside the occluder: xseg-dst {inside['xseg-dst']:.1f} dB, hull {inside['dst']:.1f} dB")
    assert inside["xseg-dst"] >= 35, inside
    assert inside["dst"] < 30, inside
