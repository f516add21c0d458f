"""Export to DeepFaceLive's .dfm (ONNX) and merging with .dfm files: ours of every model kind, and
the one DeepFaceLab's own exporter wrote. onnxruntime runs them all."""

from __future__ import annotations

import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from facelab.dfm import FACE_INPUT, FACE_OUTPUTS, MORPH_INPUT
from facelab.dfm.export import export
from facelab.dfm.runtime import DFMModel
from facelab.models.folder import ModelFolder, load_network
from facelab.models.registry import create_model
from facelab.train.recipes import recipe
from facelab.train.setup import new_config, new_state
from tests.conftest import SHARED, assert_clean_error, run_cli

ort = pytest.importorskip("onnxruntime", reason="onnxruntime is missing (pip install .[dev])")
DFL = SHARED / "dfl-files"
SMALL = {"ae_dims": 32, "e_dims": 16, "d_dims": 16, "d_mask_dims": 16}


@pytest.fixture(scope="module")
def aligned() -> Path:
    """Real aligned faces (DeepFaceLab's four whole-face dst faces) to check exports on."""
    if not (DFL / "aligned").is_dir():
        pytest.skip(f"DeepFaceLab's files not found at {DFL} (the shared/ folder is absent)")
    return DFL / "aligned"


def _model(root: Path, kind: str, arch: dict, face_type: str = "wf", seed: int = 0) -> ModelFolder:
    torch.manual_seed(seed)
    net = create_model(kind, **arch)
    rec = recipe(kind)
    folder = ModelFolder.of(root, kind, rec.class_name)
    config = new_config(rec, net.config, {"face_type": face_type})
    folder.save(config, dict(net.state_dict()), {}, new_state(rec.batch, 1), "summary\n")
    return folder


def _torch_outputs(folder: ModelFolder, faces: np.ndarray, morph: float | None = None) -> list[np.ndarray]:
    net, _ = load_network(folder)
    x = torch.from_numpy(faces).permute(0, 3, 1, 2)
    with torch.no_grad():
        face, mask, dst_mask = net.swap(x) if morph is None else net.swap(x, morph)
    return [t.permute(0, 2, 3, 1).numpy() for t in (dst_mask, face, mask)]


KINDS = [
    ("quick96", {}),  # the real, fixed Quick96 (96 px, 38 M parameters)
    ("saehd", {"resolution": 64, "archi": "df-ud", **SMALL}),
    ("saehd", {"resolution": 64, "archi": "liae-udt", **SMALL}),
    ("saehd", {"resolution": 64, "archi": "liae", **SMALL}),
    ("amp", {"resolution": 64, "inter_dims": 32, "morph_factor": 0.5, **SMALL}),
]


@pytest.mark.parametrize("kind, arch", KINDS, ids=[f"{k}-{a.get('archi', '')}" for k, a in KINDS])
def test_export_round_trip_has_deepfacelives_contract(tmp_path: Path, aligned: Path, kind, arch):
    folder = _model(tmp_path / "model", kind, arch)
    done = export(folder, tmp_path / "m.dfm", [aligned])
    res = done.resolution
    session = ort.InferenceSession(str(done.path))
    inputs = [(i.name, i.shape) for i in session.get_inputs()]
    amp = kind == "amp"
    assert inputs[0][0] == FACE_INPUT and inputs[0][1][1:] == [res, res, 3]
    assert isinstance(inputs[0][1][0], str)  # the batch is dynamic; H and W are static
    assert inputs[1:] == ([(MORPH_INPUT, [1])] if amp else [])
    outs = [(o.name, o.shape[1:]) for o in session.get_outputs()]
    assert outs == [(FACE_OUTPUTS[0], [res, res, 1]), (FACE_OUTPUTS[1], [res, res, 3]),
                    (FACE_OUTPUTS[2], [res, res, 1])]  # fmt: skip
    faces = np.random.default_rng(1).random((3, res, res, 3), dtype=np.float32)
    for morph in (0.0, 0.3, 1.0) if amp else (None,):
        feed = {FACE_INPUT: faces} | ({MORPH_INPUT: np.array([morph], np.float32)} if amp else {})
        got = session.run(None, feed)
        for a, b in zip(got, _torch_outputs(folder, faces, morph), strict=True):
            assert np.abs(a - b).max() < 1e-4
    if amp:  # the morph value moves the face from dst's identity to src's
        low, high = (session.run(None, {FACE_INPUT: faces, MORPH_INPUT: np.array([m], np.float32)})[1]
                     for m in (0.0, 1.0))  # fmt: skip
        assert np.abs(low - high).mean() > 1e-3
    loaded = DFMModel(done.path, "cpu")
    face_type = folder.load(optimizer=False).config["face_type"]
    assert (loaded.res, loaded.amp, loaded.face_type) == (res, amp, face_type)


def test_fp16_export_is_half_the_size_and_close(tmp_path: Path, aligned: Path):
    folder = _model(tmp_path / "model", "saehd", {"resolution": 64, "archi": "df-ud", **SMALL})
    full = export(folder, tmp_path / "a.dfm", [aligned])
    half = export(folder, tmp_path / "b.dfm", [aligned], fp16=True)
    assert half.path.stat().st_size < 0.6 * full.path.stat().st_size
    assert 0 < max(half.max_error.values()) < 1e-2


def test_an_export_that_fails_its_check_is_not_written(tmp_path: Path, aligned: Path, monkeypatch):
    from facelab.dfm import export as exporter
    from facelab.errors import FacelabError

    folder = _model(tmp_path / "model", "saehd", {"resolution": 64, "archi": "df-ud", **SMALL})
    monkeypatch.setitem(exporter.TOLERANCE, False, -1.0)  # no difference is small enough
    with pytest.raises(FacelabError, match="differs from PyTorch's by .* nothing was written"):
        export(folder, tmp_path / "m.dfm", [aligned])
    assert not (tmp_path / "m.dfm").exists() and not list(tmp_path.glob(".m.*"))


def test_an_export_clears_what_a_killed_one_left_and_waits_for_none(tmp_path: Path, aligned: Path):
    """Found by the kill harness: a killed export's temp file stayed beside the .dfm for good."""
    from facelab import locks
    from facelab.errors import FacelabError

    folder = _model(tmp_path / "model", "saehd", {"resolution": 64, "archi": "df-ud", **SMALL})
    out = tmp_path / "out" / "m.dfm"
    out.parent.mkdir()
    left = out.parent / ".m.k1ll3d.tmp.dfm"
    left.write_bytes(b"half an onnx file")
    other = out.parent / ".other.k1ll3d.tmp.dfm"  # another file's: not this export's to remove
    other.write_bytes(b"x")
    export(folder, out, [aligned])
    assert out.exists() and not left.exists() and other.exists()
    busy = pytest.raises(FacelabError, match="in use by .*export x.dfm")
    with locks.hold(out.parent, "export x.dfm"), busy:
        export(folder, out, [aligned], overwrite=True)


def test_exported_dfl_model_reproduces_deepfacelabs_reference(tmp_path: Path, aligned: Path):
    """model_tiny imported from DeepFaceLab, exported by facelab, run by onnxruntime: DFL's own
    predictor's outputs (tiny_ref.npz) to 1e-4, as DFL's own .dfm of it does."""
    ws = tmp_path / "ws"
    assert run_cli("import-dfl", DFL / "model_tiny", "-w", ws, "-q").returncode == 0
    shutil.copytree(aligned, ws / "data_dst" / "aligned")
    proc = run_cli("export", "--model", "tiny", "-w", ws)
    assert proc.returncode == 0, proc.stderr
    assert "onnxruntime matches PyTorch" in proc.stdout + proc.stderr
    ref = np.load(DFL / "tiny_ref.npz")
    for path in (ws / "model" / "tiny.dfm", DFL / "exported_dfm" / "tiny_SAEHD_model.dfm"):
        face, mask, dst_mask = DFMModel(path, "cpu").predict(ref["in_face_bgr"])
        assert np.abs(face - ref["out_celeb_bgr"]).max() < 1e-4, path
        assert np.abs(mask - ref["out_celeb_mask"]).max() < 1e-4, path
        assert np.abs(dst_mask - ref["out_dst_mask"]).max() < 1e-4, path
    again = run_cli("export", "--model", "tiny", "-w", ws)
    assert_clean_error(again, 1, "tiny.dfm already exists", "--overwrite")
    (ws / "data_dst" / "aligned").rename(ws / "elsewhere")
    none = run_cli("export", "--model", "tiny", "-w", ws, "--out", tmp_path / "x.dfm")
    assert_clean_error(none, 1, "real aligned faces", "--faces")
    assert not (tmp_path / "x.dfm").exists()


def test_a_dfm_that_breaks_the_contract_is_refused(tmp_path: Path, merge_ws_dfm):
    import onnx

    dfl = DFL / "exported_dfm" / "tiny_SAEHD_model.dfm"
    model = onnx.load(str(dfl))
    old = model.graph.input[0].name
    model.graph.input[0].name = "image"
    for node in model.graph.node:
        node.input[:] = ["image" if i == old else i for i in node.input]
    bad = tmp_path / "renamed.dfm"
    onnx.save(model, str(bad))
    proc = run_cli("merge", "--model", bad, "-w", merge_ws_dfm)
    assert_clean_error(proc, 1, "renamed.dfm", "'image'", "in_face")
    junk = tmp_path / "junk.dfm"
    junk.write_bytes(b"not an onnx file")
    assert_clean_error(run_cli("merge", "--model", junk, "-w", merge_ws_dfm), 1, "junk.dfm", "onnxruntime")
    assert_clean_error(run_cli("merge", "--model", tmp_path / "gone.dfm", "-w", merge_ws_dfm), 1,
                       "gone.dfm does not exist")  # fmt: skip


@pytest.fixture
def merge_ws_dfm(trained_ws: Path, tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    shutil.copytree(trained_ws, ws, ignore=shutil.ignore_patterns("merged*", "*.mp4"))
    return ws


def _merged(ws: Path, name: str) -> list[np.ndarray]:
    folder = ws / "data_dst" / "merged"
    frames = [cv2.imread(str(p)) for p in sorted(folder.glob("*.png"))]
    folder.rename(ws / "data_dst" / name)
    return frames


def test_merge_with_a_dfm_gives_the_models_frames(merge_ws_dfm: Path):
    ws = merge_ws_dfm
    assert run_cli("export", "--model", "m", "-w", ws, "-q").returncode == 0
    proc = run_cli("merge", "--model", "m", "--frames", "1-12", "--precision", "fp32", "-w", ws, "-q")
    assert proc.returncode == 0, proc.stderr
    native = _merged(ws, "native")
    proc = run_cli("merge", "--model", ws / "model" / "m.dfm", "--frames", "1-12", "-w", ws)
    assert proc.returncode == 0, proc.stderr
    assert "m.dfm" in proc.stdout + proc.stderr
    assert (ws / "model" / "m.dfm.merge_session.json").is_file()
    exported = _merged(ws, "exported")
    assert len(native) == len(exported) == 12
    for a, b in zip(native, exported, strict=True):
        diff = np.abs(a.astype(int) - b)
        assert diff.max() <= 2 and (diff > 0).mean() < 0.01  # float rounding, nowhere a real change


def test_merge_runs_deepfacelabs_own_dfm(merge_ws_dfm: Path):
    """DFL's export of model_tiny (a full-face model that does not say so): --face-type full."""
    ws = merge_ws_dfm
    dfm = DFL / "exported_dfm" / "tiny_SAEHD_model.dfm"
    proc = run_cli("merge", "--model", dfm, "--face-type", "full", "--frames", "1-3", "-w", ws, "-q")
    assert proc.returncode == 0, proc.stderr
    merged = sorted((ws / "data_dst" / "merged").glob("*.png"))
    assert [p.stem for p in merged] == ["00001", "00002", "00003"]
    frame = cv2.imread(str(next((ws / "data_dst").glob("00001.*"))))
    assert np.abs(cv2.imread(str(merged[0])).astype(int) - frame).mean() > 0.5  # the face was replaced
