"""Merging on real media with a small model trained in the test (src_1 -> dst_1)."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest

from facelab.color import MODES as COLOR_MODES
from facelab.faces import meta
from facelab.faces.faceset import load_faceset
from facelab.media.probe import probe_video
from facelab.merge.blend import FaceInput, finish_face, merge_frame
from facelab.merge.pipeline import MergeModel, cut_faces, plan_frames
from facelab.merge.session import MergeSession
from facelab.merge.settings import validate
from facelab.models.folder import ModelFolder
from facelab.workspace import Workspace
from tests.conftest import assert_clean_error, run_cli


@pytest.fixture
def merge_ws(trained_ws: Path, tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    shutil.copytree(trained_ws, ws)
    return ws


@pytest.fixture(scope="session")
def model(trained_ws: Path) -> MergeModel:
    return MergeModel(ModelFolder.of(trained_ws / "model", "m", "Quick96"))


def _faces(ws: Path, model: MergeModel, number: int, settings: dict) -> tuple[np.ndarray, list, FaceInput]:
    plans = plan_frames(Workspace(ws), model.face_type)
    plan = next(p for p in plans if p.number == number)
    frame = cv2.imread(str(plan.path))
    cut = cut_faces(frame, plan, model.res, model.face_type, settings)
    pred, pmask, dmask = model.predict(np.stack([c["dst_crop"] for c in cut]))
    faces = [FaceInput(c["mat"], c["dst_crop"], pred[i], pmask[i], dmask[i], c["hull"], c["motion"])
             for i, c in enumerate(cut)]  # fmt: skip
    return frame, plan.faces, faces


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(((a.astype(np.float64) - b) ** 2).mean())
    return 99.0 if mse == 0 else 10 * np.log10(255**2 / mse)


def test_merge_every_frame_then_video(merge_ws: Path):
    proc = run_cli("merge", "-w", merge_ws, "-q")
    assert proc.returncode == 0, proc.stderr
    frames = sorted((merge_ws / "data_dst").glob("*.png"))
    merged = sorted((merge_ws / "data_dst" / "merged").glob("*.png"))
    masks = sorted((merge_ws / "data_dst" / "merged_mask").glob("*.png"))
    assert [p.stem for p in merged] == [p.stem for p in frames] == [p.stem for p in masks]
    for f in frames[::10]:
        orig = cv2.imread(str(f))
        out = cv2.imread(str(merge_ws / "data_dst" / "merged" / f"{f.stem}.png"))
        mask = cv2.imread(str(merge_ws / "data_dst" / "merged_mask" / f"{f.stem}.png"), cv2.IMREAD_GRAYSCALE)
        outside = cv2.dilate((mask > 0).astype(np.uint8), np.ones((5, 5), np.uint8)) == 0
        assert _psnr(orig[outside], out[outside]) > 45
        inside = mask > 200
        assert np.abs(orig[inside].astype(int) - out[inside]).mean() > 3  # the face changed
    again = run_cli("merge", "-w", merge_ws, "-q")
    assert f"{len(frames)} already done" in again.stdout
    proc = run_cli("make-video", "-w", merge_ws, "--format", "mp4", "--bitrate", "8", "-q")
    assert proc.returncode == 0, proc.stderr
    result = probe_video(merge_ws / "result.mp4")
    assert result.frame_count == len(frames) and result.has_audio


def test_frames_extracted_again_are_merged_again(merge_ws: Path, media: Path):
    """The journal records the dst frame each merged frame came from: after the dst frames are
    extracted again (here as JPEG instead of PNG), a rerun merges them again instead of keeping the
    frames made from the old ones."""
    merge = ["merge", "--model", "m", "--frames", "1-3", "-w", merge_ws]
    assert "merged 3 frames" in run_cli(*merge).stdout
    assert "merged 0 frames" in run_cli(*merge).stdout
    proc = run_cli("extract-frames", "dst", "--input", media / "dst_1.mp4", "--format", "jpg", "--overwrite",
                   "-w", merge_ws)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "merged 3 frames" in run_cli(*merge).stdout


def test_merging_with_another_model_never_replaces_frames_silently(merge_ws: Path):
    """The merged frames may hold hours of per-frame tuning with one model: another model's merge
    must be refused without --overwrite, naming the model that made them."""
    assert run_cli("merge", "-w", merge_ws, "-q", "--frames", "1-3").returncode == 0
    shutil.copytree(merge_ws / "model" / "m_Quick96", merge_ws / "model" / "other_Quick96")
    merged = merge_ws / "data_dst" / "merged"
    before = {p.name: p.read_bytes() for p in merged.glob("*.png")}
    refused = run_cli("merge", "-w", merge_ws, "-q", "--model", "other", "--frames", "1-3", "--blur", "10")
    assert_clean_error(refused, 1, "holds frames merged with m_Quick96", "--overwrite")
    assert {p.name: p.read_bytes() for p in merged.glob("*.png")} == before
    same = run_cli("merge", "-w", merge_ws, "-q", "--model", "m", "--frames", "1-3", "--blur", "10")
    assert same.returncode == 0, same.stderr  # the same model may re-merge its own frames
    done = run_cli("merge", "-w", merge_ws, "-q", "--model", "other", "--frames", "1-3", "--overwrite")
    assert done.returncode == 0, done.stderr
    assert "merged 3 frames" in done.stdout


def test_a_second_merge_is_refused_while_one_runs(merge_ws: Path):
    import signal
    import subprocess
    import sys
    import time

    from facelab.merge.session import JOURNAL

    first = subprocess.Popen([sys.executable, "-m", "facelab", "merge", "-w", str(merge_ws), "-q"],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    journal = merge_ws / "data_dst" / "merged" / JOURNAL
    deadline = time.time() + 120
    while time.time() < deadline and not (journal.exists() and journal.stat().st_size):
        time.sleep(0.01)
    first.send_signal(signal.SIGSTOP)  # paused while it holds the frames: the others surely meet it
    try:
        assert first.poll() is None, "the first merge ended before it could be paused"
        second = run_cli("merge", "-w", merge_ws, "-q", "--blur", "10")
        video = run_cli("make-video", "-w", merge_ws)
    finally:
        first.send_signal(signal.SIGCONT)
    assert first.wait(timeout=300) == 0, first.stderr.read()
    assert_clean_error(second, 1, "in use by `facelab merge`")
    assert_clean_error(video, 1, "in use by `facelab merge`")
    assert run_cli("make-video", "-w", merge_ws).returncode == 0  # once it is done


def test_a_missing_dst_frame_is_reported_with_how_to_fill_it(merge_ws: Path):
    (merge_ws / "data_dst" / "00120.png").unlink()
    for face in (merge_ws / "data_dst" / "aligned").glob("00120_*.jpg"):
        face.unlink()
    proc = run_cli("merge", "-w", merge_ws, "-q", "--frames", "118-125")
    assert proc.returncode == 0, proc.stderr
    assert "lacks 1 frames of the dst video (the first: 00120)" in proc.stdout
    assert "facelab extract-frames dst --overwrite" in proc.stdout


def test_a_damaged_model_names_the_autobackup_to_restore(merge_ws: Path):
    folder = ModelFolder.of(merge_ws / "model", "m", "Quick96")
    folder.backup()
    data = bytearray((folder.path / "model.safetensors").read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder.path / "model.safetensors").write_bytes(bytes(data))
    assert_clean_error(run_cli("merge", "-w", merge_ws, "--model", "m"), 1, "model.safetensors is damaged",
                       "autobackup is 01", "facelab models restore m")  # fmt: skip


def _lab_mean(img: np.ndarray, region: np.ndarray) -> np.ndarray:
    lab = cv2.cvtColor(img.astype(np.float32) / 255, cv2.COLOR_BGR2LAB)
    return lab[region].mean(0)


def _grad_energy(img: np.ndarray, band: np.ndarray) -> float:
    grey = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY).astype(np.float32)
    gx, gy = cv2.Sobel(grey, cv2.CV_32F, 1, 0), cv2.Sobel(grey, cv2.CV_32F, 0, 1)
    return float((gx**2 + gy**2)[band].mean())


def test_default_settings_match_colour_and_leave_no_seam(merge_ws: Path, model: MergeModel):
    s = validate({})
    delta_e, ratios = [], []
    for number in range(5, 125, 12):
        frame, landmarks, faces = _faces(merge_ws, model, number, s)
        out, mask = merge_frame(frame, faces, s)
        inner = np.zeros(frame.shape[:2], np.uint8)
        cv2.fillConvexPoly(inner, cv2.convexHull(np.round(landmarks[0][17:68]).astype(np.int32)), 1)
        delta_e.append(float(np.linalg.norm(_lab_mean(out, inner > 0) - _lab_mean(frame, inner > 0))))
        core = (mask > 127).astype(np.uint8)
        k = np.ones((15, 15), np.uint8)
        band = (cv2.dilate(core, k) > 0) & (cv2.erode(core, k) == 0)
        ratios.append(_grad_energy(out, band) / _grad_energy(frame, band))
    assert max(delta_e) < 8, delta_e
    assert max(ratios) <= 1.25, ratios


def test_erode_and_blur_change_the_mask(merge_ws: Path, model: MergeModel):
    base = validate({})
    frame, _, faces = _faces(merge_ws, model, 60, base)
    area = {}
    for erode in (-60, 0, 60):
        _, mask = merge_frame(frame, faces, base | {"erode": erode})
        area[erode] = int((mask > 127).sum())
    assert area[60] < area[0] < area[-60]
    hull = base | {"mask_mode": "dst"}  # a hard-edged mask, so only the blur makes it soft
    _, sharp = merge_frame(frame, faces, hull | {"blur": 0})
    _, soft = merge_frame(frame, faces, hull | {"blur": 120})
    partial = lambda m: int(((m > 10) & (m < 245)).sum())  # noqa: E731
    assert partial(soft) > 3 * max(1, partial(sharp))


@pytest.mark.parametrize("mode", [m for m in COLOR_MODES if m != "none"])
def test_each_colour_transfer_moves_the_face_toward_the_frame(merge_ws: Path, model: MergeModel, mode: str):
    s = validate({"color_transfer": "none"})
    _, _, faces = _faces(merge_ws, model, 60, s)
    face = faces[0]
    face.pred = np.clip(face.pred * np.float32([0.6, 0.9, 1.3]), 0, 1)  # a strong colour cast to remove
    area = face.hull > 0.5
    target = _lab_mean(face.dst_crop * 255, area)
    before = np.linalg.norm(_lab_mean(finish_face(face, face.hull, s) * 255, area) - target)
    after = np.linalg.norm(
        _lab_mean(finish_face(face, face.hull, s | {"color_transfer": mode}) * 255, area) - target
    )
    assert after < 0.6 * before, (mode, before, after)


def test_original_and_raw_predict(merge_ws: Path, model: MergeModel):
    frame, _, faces = _faces(merge_ws, model, 30, validate({}))
    out, mask = merge_frame(frame, faces, validate({"mode": "original"}))
    assert np.array_equal(out, frame) and mask.max() > 0
    out, _ = merge_frame(frame, faces, validate({"mode": "raw-predict"}))
    assert np.array_equal(out, np.clip(faces[0].pred * 255 + 0.5, 0, 255).astype(np.uint8))
    for mode in ("hist-match", "seamless", "seamless-hist-match", "raw-rgb"):
        out, _ = merge_frame(frame, faces, validate({"mode": mode}))
        assert out.shape == frame.shape and not np.array_equal(out, frame), mode


def test_other_settings_change_the_face(merge_ws: Path, model: MergeModel):
    base = validate({})
    frame, _, faces = _faces(merge_ws, model, 60, base)
    ref, ref_mask = merge_frame(frame, faces, base)
    bigger = base | {"face_scale": 20}  # applied where the faces are cut
    _, big_mask = merge_frame(frame, _faces(merge_ws, model, 60, bigger)[2], bigger)
    assert (big_mask > 127).sum() > 1.2 * (ref_mask > 127).sum()
    changes = [
        {"sharpen_mode": "gaussian", "sharpen_amount": 60}, {"sharpen_amount": -60},
        {"denoise": 400}, {"bicubic_degrade": 60}, {"color_degrade": 80}, {"motion_blur": 100},
    ]  # fmt: skip
    for change in changes:
        out, _ = merge_frame(frame, faces, base | change)
        assert not np.array_equal(out, ref), change


def test_interactive_settings_for_one_frame_and_the_following_ones(tmp_path: Path):
    session = MergeSession(tmp_path / "merge_session.json")
    everything = session.for_frame(1)
    session.set_frames(10, 100, everything | {"erode": 40})  # `?` at frame 10: every following frame
    session.set_frames(20, 20, everything | {"erode": 40})  # what frame 20 gets anyway: no override
    assert len(session.overrides) == 1
    session.set_frames(20, 20, everything | {"erode": 0})  # frame 20 alone set back to the default
    assert [session.for_frame(n)["erode"] for n in (9, 10, 20, 21)] == [0, 40, 0, 40]
    session.set_frames(20, 20, everything | {"erode": 40, "blur": 30})  # replaces frame 20's override
    assert session.overrides[-1]["settings"] == {"blur": 30}
    assert session.for_frame(20)["erode"] == 40 and session.for_frame(21)["blur"] == everything["blur"]
    session.set_frames(10, 100, everything | {"erode": 10})  # `?` again at 10 replaces that range
    assert [session.for_frame(n)["erode"] for n in (10, 20, 100)] == [10, 10, 10]
    session.save()
    assert MergeSession.load(session.path).overrides == session.overrides


def test_frame_range_settings_preview_and_config(merge_ws: Path, tmp_path: Path):
    assert run_cli("merge", "-w", merge_ws, "-q").returncode == 0
    before = cv2.imread(str(merge_ws / "data_dst" / "merged" / "00050.png"))
    proc = run_cli("merge", "-w", merge_ws, "-q", "--frames", "40-60", "--erode", "80")
    assert proc.returncode == 0 and "merged 21 frames" in proc.stdout, proc.stdout
    assert not np.array_equal(before, cv2.imread(str(merge_ws / "data_dst" / "merged" / "00050.png")))
    proc = run_cli("merge", "-w", merge_ws, "-q")  # the session keeps the range's settings
    assert "merged 0 frames" in proc.stdout and "125 already done" in proc.stdout
    session = MergeSession.load(merge_ws / "model" / "m_Quick96" / "merge_session.json")
    assert session.for_frame(50)["erode"] == 80 and session.for_frame(10)["erode"] == 0
    config = tmp_path / "merge.yaml"
    config.write_text("mode: seamless\ncolor-transfer: mkl-m\n")
    proc = run_cli("merge", "-w", merge_ws, "-q", "--preview", "70", "--config", config)
    assert proc.returncode == 0, proc.stderr
    assert (merge_ws / "data_dst" / "merge_preview" / "00070.png").exists()
    assert (merge_ws / "data_dst" / "merge_preview" / "00070_mask.png").exists()
    proc = run_cli("merge", "-w", merge_ws, "-q", "--config", config)  # now for every frame
    assert "merged 125 frames" in proc.stdout


def test_bad_input(merge_ws: Path, tmp_path: Path):
    empty = tmp_path / "empty"
    shutil.copytree(merge_ws / "data_dst", empty / "data_dst")
    assert_clean_error(run_cli("merge", "-w", empty), 1, "no trained model", "facelab train")
    assert_clean_error(
        run_cli("merge", "-w", merge_ws, "--erode", "999"), 2, "erode must be from -400 to 400"
    )
    bad = tmp_path / "bad.yaml"
    bad.write_text("blur: -5\n")
    assert_clean_error(
        run_cli("merge", "-w", merge_ws, "--config", bad), 2, "bad.yaml", "blur must be from 0 to 400"
    )
    session = merge_ws / "model" / "m_Quick96" / "merge_session.json"
    session.write_text("{not json")
    assert_clean_error(
        run_cli("merge", "-w", merge_ws), 1, "merge_session.json is damaged", "--fresh-session"
    )
    proc = run_cli("merge", "-w", merge_ws, "-q", "--fresh-session", "--frames", "1-3")
    assert proc.returncode == 0, proc.stderr


def test_frames_without_faces_are_copied_and_counted(merge_ws: Path):
    aligned = merge_ws / "data_dst" / "aligned"
    for p in sorted(aligned.glob("0001*_0.jpg")):  # frames 10-19 lose their faces
        p.unlink()
    proc = run_cli("merge", "-w", merge_ws, "-q")
    assert proc.returncode == 0 and "10 without a face, copied through" in proc.stdout, proc.stdout
    orig = cv2.imread(str(merge_ws / "data_dst" / "00012.png"))
    assert np.array_equal(orig, cv2.imread(str(merge_ws / "data_dst" / "merged" / "00012.png")))
    assert cv2.imread(str(merge_ws / "data_dst" / "merged_mask" / "00012.png")).max() == 0


def test_missing_source_frame_and_wrong_face_type(merge_ws: Path):
    (merge_ws / "data_dst" / "00007.png").unlink()
    assert_clean_error(run_cli("merge", "-w", merge_ws), 1, "00007_0.jpg comes from frame 00007.png",
                       "extract-frames dst")  # fmt: skip
    shutil.copy(merge_ws / "data_dst" / "00008.png", merge_ws / "data_dst" / "00007.png")
    fs = load_faceset(merge_ws / "data_dst" / "aligned")
    face = fs.faces[3]
    m = face.meta
    m.face_type = "half_face"
    face.path.write_bytes(meta.embed(face.path.read_bytes(), m))
    proc = run_cli("merge", "-w", merge_ws)
    assert_clean_error(proc, 1, "is a half_face face but the model merges full_face", "--face-type full")


class _MeanXSeg:
    """A stand-in XSeg whose 'mask' is the crop's brightness: content-dependent, so where each mask
    lands in the model's crop can be checked."""

    def __init__(self, res: int, face_type: str):
        self.res, self.face_type, self.id = res, face_type, "mean"

    def predict(self, crops: list[np.ndarray]) -> np.ndarray:
        return np.stack([c.mean(axis=2) / 255 for c in crops]).astype(np.float32)


def test_xseg_masks_land_in_the_models_crop(merge_ws: Path, model: MergeModel):
    from facelab.merge.pipeline import xseg_masks

    plan = next(p for p in plan_frames(Workspace(merge_ws), model.face_type) if p.faces)
    frame = cv2.imread(str(plan.path))
    s = validate({})
    cut = cut_faces(frame, plan, model.res, model.face_type, s)
    pred = np.stack([c["dst_crop"] for c in cut])[..., ::-1].copy()  # any image: BGR reversed
    crop = cut[0]["dst_crop"]
    for res in (model.res, 2 * model.res):  # XSeg at the model's size, or twice it
        prd, dst = xseg_masks(_MeanXSeg(res, model.face_type), frame, cut, pred)
        assert np.abs(dst[0] - crop.mean(axis=2)).mean() < 0.02, res  # the dst face, where it is
        assert np.abs(prd[0] - pred[0].mean(axis=2)).mean() < 0.02, res
    prd, dst = xseg_masks(_MeanXSeg(model.res, "head"), frame, cut, pred)  # another face type: re-cropped
    inner = slice(model.res // 4, 3 * model.res // 4)
    assert np.abs(dst[0][inner, inner] - crop.mean(axis=2)[inner, inner]).mean() < 0.03


def test_xseg_mask_modes_merge_with_an_xseg_model_and_need_one(merge_ws: Path):
    from facelab.faces import masks
    from facelab.train.recipes import RECIPES
    from facelab.train.trainer import TrainOptions, train
    from facelab.xseg.labels import set_labels

    refused = run_cli("merge", "-w", merge_ws, "--mask-mode", "xseg-dst", "--frames", "1-2", "-q")
    assert_clean_error(refused, 1, "mask mode xseg-dst needs an XSeg model", "facelab xseg train")
    for face in load_faceset(merge_ws / "data_dst" / "aligned").faces[:4]:  # label the hulls
        hull = (masks.hull_mask(face.meta.landmarks, face.meta.size) > 127).astype(np.uint8)
        contours = cv2.findContours(hull, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)[0]
        contour = max(contours, key=cv2.contourArea)
        set_labels(face.path, [meta.Polygon(True, contour[:, 0].astype(float))])
    opts = TrainOptions(target_iter=3, arch={"resolution": 64, "base_ch": 8},
                        model_options={"resolution": 64}, seed=1, preview=False)  # fmt: skip
    train(Workspace(merge_ws), RECIPES["xseg"], "occl", opts)
    for mode in ("xseg-dst", "learned-prd*learned-dst*xseg-prd*xseg-dst"):
        done = run_cli("merge", "-w", merge_ws, "--mask-mode", mode, "--xseg-model", "occl",
                       "--frames", "1-2", "-q")  # fmt: skip
        assert done.returncode == 0, done.stderr
        assert "merged 2 frames" in done.stdout, done.stdout
