"""XSeg: labels in the faces' metadata (checked, exported, imported, removed), training through the
shared engine (resumes exactly), applying masks (resumable, re-cropping), and face training on
applied masks."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from facelab.faces import masks, meta
from facelab.faces.faceset import load_faceset
from facelab.models.folder import ModelFolder, load_network
from facelab.models.xseg import ConvBlock
from facelab.train.crops import FaceJob, load_face
from facelab.train.recipes import RECIPES
from facelab.train.trainer import TrainOptions, train
from facelab.workspace import Workspace
from facelab.xseg import labels
from tests.conftest import SHARED, assert_clean_error, run_cli

LABELLED = SHARED / "dfl-files" / "aligned_xseg"
TINY = {"resolution": 64, "base_ch": 8}


@pytest.fixture
def xseg_ws(tmp_path: Path) -> Path:
    """A workspace whose dst faceset is DeepFaceLab's six labelled faces (512 px, whole face)."""
    if not LABELLED.is_dir():
        pytest.skip(f"DeepFaceLab's labelled faces not found at {LABELLED} (the shared/ folder is absent)")
    aligned = tmp_path / "ws" / "data_dst" / "aligned"
    aligned.mkdir(parents=True)
    for p in sorted(LABELLED.glob("*.jpg")):
        shutil.copy(p, aligned / p.name)
        (aligned / p.name).chmod(0o644)
    return tmp_path / "ws"


def _scan(data: bytes) -> bytes:
    return data[data.index(b"\xff\xda") :]


def test_labels_are_checked_written_in_place_and_round_trip_through_json(xseg_ws: Path, tmp_path: Path):
    face = xseg_ws / "data_dst" / "aligned" / "00030_0.jpg"
    before = face.read_bytes()
    bowtie = meta.Polygon(True, np.array([[100, 100], [300, 300], [300, 100], [100, 300]], float))
    checked = labels.set_labels(face, [
        bowtie,  # self-intersecting: kept, filled even-odd as cv2.fillPoly (and the reference) fill it
        meta.Polygon(False, np.array([[10, 10], [20, 20]], float)),  # 2 points: dropped
        meta.Polygon(False, np.array([[-30, 200], [250, 200], [250, 700]], float)),  # clipped to 0..512
    ])  # fmt: skip
    assert (checked.dropped, checked.clipped) == (1, 2)
    after = face.read_bytes()
    assert _scan(after) == _scan(before)  # the image data is untouched
    stored = meta.read(face).polygons
    assert [p.include for p in stored] == [True, False]
    assert stored[1].points.tolist() == [[0, 200], [250, 200], [250, 512]]
    filled = np.zeros((512, 512), np.uint8)
    cv2.fillPoly(filled, [bowtie.points.astype(np.int32)], 1)
    drawn = masks.label_mask(stored[:1], 512)
    assert np.array_equal(drawn, filled) and drawn[120, 200] == 0 and drawn[200, 120] == 1  # two triangles

    out = tmp_path / "labels.json"
    proc = run_cli("xseg", "labels", "export", out, "-w", xseg_ws, "-q")
    assert proc.returncode == 0, proc.stderr
    exported = json.loads(out.read_text())
    assert len(exported["faces"]) == 6 and len(exported["faces"]["00030_0.jpg"]) == 2
    assert run_cli("xseg", "remove-labels", "dst", "-w", xseg_ws).returncode == 2  # asks: needs --yes
    assert run_cli("xseg", "remove-labels", "dst", "-w", xseg_ws, "--yes", "-q").returncode == 0
    assert not any(f.meta.polygons for f in load_faceset(xseg_ws / "data_dst" / "aligned").faces)
    back = run_cli("xseg", "labels", "import", out, "-w", xseg_ws)
    assert back.returncode == 0 and "set 14 polygons on 6 faces" in back.stdout, back.stdout
    assert "warning: 5 points outside the image clipped" in back.stdout  # DFL's own 00070_0 and 00110_0
    assert [p.points.tolist() for p in meta.read(face).polygons] == [p.points.tolist() for p in stored]
    out.write_text('{"format": "facelab-xseg-labels", "faces": {"00030_0.jpg": [{"type": "sideways"}]}}')
    assert_clean_error(run_cli("xseg", "labels", "import", out, "-w", xseg_ws), 1, "labels.json", "malformed")
    fetched = run_cli("xseg", "fetch", "dst", "-w", xseg_ws, "-q")
    assert fetched.returncode == 0 and len(list((xseg_ws / "data_dst" / "aligned_xseg").glob("*.jpg"))) == 6


def test_the_fused_frn_tlu_equals_its_plain_ops():
    """Training runs FRN + TLU through one hand-written backward (models/xseg.py); it must give
    autograd's gradients for the input and every parameter, and keep bf16 under autocast."""
    torch.manual_seed(0)
    block = ConvBlock(4, 6).double()
    with torch.no_grad():  # away from the initial values, where some terms vanish
        block.frn.weight.uniform_(0.5, 1.5), block.frn.bias.uniform_(-0.2, 0.2)
        block.tlu.tau.uniform_(-0.3, 0.3), block.frn.eps.fill_(-1e-3)
    x = torch.randn(2, 4, 9, 7, dtype=torch.double, requires_grad=True)
    params = [x, *block.parameters()]
    plain = block.tlu(block.frn(block.conv(x)))
    fused = block(x)
    assert torch.allclose(fused, plain, atol=1e-12)
    weights = torch.randn_like(plain)  # a loss whose gradient differs everywhere
    for a, b in zip(torch.autograd.grad((plain * weights).sum(), params),
                    torch.autograd.grad((fused * weights).sum(), params), strict=True):  # fmt: skip
        assert torch.allclose(a, b, atol=1e-10), (a - b).abs().max()
    with torch.no_grad():
        assert torch.equal(block(x), plain)  # inference (and ONNX export) takes the plain ops
    block = block.float()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = block(x.float().detach().requires_grad_())
    assert low.dtype == torch.bfloat16 and torch.allclose(low.float(), plain.float(), atol=0.05)


def test_xseg_train_needs_labelled_faces(xseg_ws: Path):
    assert run_cli("xseg", "remove-labels", "dst", "-w", xseg_ws, "--yes", "-q").returncode == 0
    proc = run_cli("xseg", "train", "-w", xseg_ws, "--target-iter", "2")
    assert_clean_error(proc, 1, "no labelled faces", "xseg labels import")


def _xseg(ws: Path, name: str, target: int):
    opts = TrainOptions(target_iter=target, arch=dict(TINY), model_options={"resolution": 64}, seed=3,
                        preview=False, status_every_s=0, threads=2)  # fmt: skip
    return train(Workspace(ws), RECIPES["xseg"], name, opts)


def test_xseg_trains_resumes_exactly_and_applies(xseg_ws: Path):
    straight = _xseg(xseg_ws, "straight", 8)
    _xseg(xseg_ws, "split", 4)
    split = _xseg(xseg_ws, "split", 8)
    a, b = ModelFolder(straight.folder).load(), ModelFolder(split.folder).load()
    for k, v in a.weights.items():
        assert torch.allclose(v, b.weights[k], atol=1e-6, rtol=0), k
    assert a.config["face_type"] == "whole_face" and a.config["architecture"]["name"] == "xseg"

    aligned = xseg_ws / "data_dst" / "aligned"
    proc = run_cli("xseg", "apply", "dst", "--model", "straight", "-w", xseg_ws, "-q")
    assert proc.returncode == 0, proc.stderr
    assert "masked 6 faces" in proc.stdout
    for f in load_faceset(aligned).faces:
        mask = masks.decode_xseg_mask(f.meta.xseg_mask)
        assert mask.shape == (64, 64) and set(np.unique(mask)) <= {0, 255}
        assert f.meta.extra["xseg_model"].startswith("straight_XSeg@8:")
    again = run_cli("xseg", "apply", "dst", "--model", "straight", "-w", xseg_ws, "-q")
    assert "masked 0 faces" in again.stdout and "6 already done" in again.stdout, again.stdout
    assert run_cli("xseg", "remove", "dst", "-w", xseg_ws, "-q").returncode == 0
    assert all(f.meta.xseg_mask is None for f in load_faceset(aligned).faces)
    assert all(f.meta.polygons for f in load_faceset(aligned).faces)  # labels are not masks


def test_face_training_uses_the_applied_mask_and_survives_a_damaged_one(xseg_ws: Path):
    path = xseg_ws / "data_dst" / "aligned" / "00030_0.jpg"
    face = meta.read(path)

    def loaded(model_type: str, mask: np.ndarray | None = None, data: bytes | None = None):
        data = cv2.imencode(".png", mask)[1].tobytes() if mask is not None else data
        job = FaceJob(str(path), face.face_type, face.size, face.landmarks, 64, model_type, data)
        _, face_masks, damaged = load_face(job)
        return face_masks[0].astype(int), damaged

    # an applied mask is stored at its own size over the whole aligned image: it follows the crop
    hull_256 = masks.hull_mask(face.landmarks * 256 / face.size, 256)
    for model_type in ("whole_face", "full_face"):
        got, damaged = loaded(model_type, hull_256)
        hull, _ = loaded(model_type)
        assert not damaged and np.abs(got - hull).mean() < 6, model_type
    left = np.zeros((256, 256), np.uint8)
    left[:, :128] = 255
    got, _ = loaded("whole_face", left)
    assert got[:, :30].min() == 255 and got[:, 34:].max() == 0  # the applied mask, not the hull
    broken, damaged = loaded("whole_face", data=b"\x89PNG\r\n\x1a\nnot really")
    assert damaged and np.array_equal(broken, loaded("whole_face")[0])  # the hull instead, flagged


def test_xseg_exports_to_onnx_as_deepfacelab_lays_it_out(xseg_ws: Path):
    ort = pytest.importorskip("onnxruntime", reason="onnxruntime is missing (pip install .[dev])")
    _xseg(xseg_ws, "xseg", 2)
    proc = run_cli("xseg", "export", "-w", xseg_ws, "-q")
    assert proc.returncode == 0, proc.stderr
    path = xseg_ws / "model" / "xseg.onnx"
    session = ort.InferenceSession(str(path))
    (inp,), (out,) = session.get_inputs(), session.get_outputs()
    assert (inp.name, inp.shape[1:]) == ("in_face:0", [64, 64, 3])
    assert (out.name, out.shape[1:]) == ("out_mask:0", [64, 64, 1])
    faces = np.random.default_rng(0).random((3, 64, 64, 3), dtype=np.float32)
    got = session.run(None, {"in_face:0": faces})[0]
    net, _ = load_network(ModelFolder.of(xseg_ws / "model", "xseg", "XSeg"))
    with torch.no_grad():
        want = torch.sigmoid(net(torch.from_numpy(faces).permute(0, 3, 1, 2))).permute(0, 2, 3, 1).numpy()
    assert np.abs(got - want).max() < 1e-4
    again = run_cli("xseg", "export", "-w", xseg_ws)
    assert_clean_error(again, 1, "xseg.onnx already exists", "--overwrite")


def test_apply_recrops_to_the_models_face_type(xseg_ws: Path):
    """A full-face XSeg model applied to whole faces: each face is cut to full face for the model and
    the mask is put back where that crop lies in the aligned image (nothing outside it)."""
    from facelab.faces.align import crop_for_model

    opts = TrainOptions(target_iter=2, arch=dict(TINY), model_options={"resolution": 64, "face_type": "f"},
                        seed=3, preview=False, status_every_s=0)  # fmt: skip
    train(Workspace(xseg_ws), RECIPES["xseg"], "full", opts)
    proc = run_cli("xseg", "apply", "dst", "--model", "full", "-w", xseg_ws, "-q")
    assert proc.returncode == 0, proc.stderr
    masked = 0
    for f in load_faceset(xseg_ws / "data_dst" / "aligned").faces:
        mask = masks.decode_xseg_mask(f.meta.xseg_mask)
        mat = crop_for_model(f.meta.face_type, 64, f.meta.landmarks * 64 / f.meta.size, 64, "full_face")
        inside = cv2.warpAffine(np.ones((64, 64), np.uint8), mat, (64, 64),
                                flags=cv2.WARP_INVERSE_MAP | cv2.INTER_NEAREST)  # fmt: skip
        assert mask[cv2.dilate(inside, np.ones((3, 3), np.uint8)) == 0].max(initial=0) == 0, f.path.name
        assert inside.mean() < 0.9  # the full-face crop is smaller than the whole-face image
        masked += int((mask[inside > 0] > 0).sum())
    assert masked > 0  # the model masked something, inside the crops
