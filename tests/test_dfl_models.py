"""Importing DeepFaceLab models (files written by DeepFaceLab itself, in shared/dfl-files) and
exporting ours back: the imported networks reproduce DeepFaceLab's own outputs, training resumes
at its iteration, and bad files are refused with one line before anything is written."""

from __future__ import annotations

import io
import json
import os
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from facelab.dfl import names, pickles
from facelab.dfl.models import export_model
from facelab.models.amp import FROZEN_PREFIXES
from facelab.models.discriminators import for_options
from facelab.models.folder import TRASH, ModelFolder, load_network
from facelab.models.registry import create_model
from facelab.models.xseg import FRN, TLU, BlurPool, UpConvBlock
from facelab.train import model_options
from facelab.train.optim import OPTIMIZERS
from facelab.train.recipes import recipe, with_options
from facelab.train.setup import new_config, new_state
from tests.conftest import SHARED, assert_clean_error, run_cli

DFL = SHARED / "dfl-files"
NUMPY_1 = {("numpy.core.multiarray", "_reconstruct"), ("numpy", "ndarray"), ("numpy", "dtype"),
           ("numpy.core.multiarray", "scalar")}  # fmt: skip


@pytest.fixture
def dfl_files() -> Path:
    if not DFL.is_dir():
        pytest.skip(f"DeepFaceLab's files not found at {DFL} (the project's shared/ folder is absent)")
    return DFL


def _import(ws: Path, path: Path, *extra: str):
    return run_cli("import-dfl", path, "-w", ws, "-q", *extra)


def _nhwc(t: torch.Tensor) -> np.ndarray:
    return t.permute(0, 2, 3, 1).numpy()


@pytest.mark.parametrize("folder, ref, morphs", [
    ("model_tiny", "tiny_ref.npz", None),
    ("model_liae", "liae_ref.npz", None),
    ("model_amp", "amp_ref.npz", {"m000": 0.0, "m030": 0.3, "m050": 0.5, "m100": 1.0}),
])  # fmt: skip
def test_imported_models_reproduce_deepfacelab_outputs(dfl_files: Path, tmp_path: Path, folder, ref, morphs):
    proc = _import(tmp_path, dfl_files / folder)
    assert proc.returncode == 0, proc.stderr
    (found,) = [p for p in (tmp_path / "model").iterdir() if not p.name.startswith("_")]
    net, ckpt = load_network(ModelFolder(found))
    assert ckpt.state["iteration"] == 8 and ckpt.config["imported"]["class"] in ("SAEHD", "AMP")
    r = np.load(dfl_files / ref)
    x = torch.from_numpy(r["in_face_bgr"]).permute(0, 3, 1, 2)
    errors = {}
    for tag, morph in (morphs or {"": None}).items():
        face, mask, dst_mask = net.swap(x) if morph is None else net.swap(x, morph)
        suffix = f"_{tag}" if tag else ""
        errors[f"swap{suffix}"] = np.abs(_nhwc(face) - r[f"out_celeb_bgr{suffix}"]).max()
        errors[f"swap mask{suffix}"] = np.abs(_nhwc(mask)[..., 0] - r[f"out_celeb_mask{suffix}"]).max()
        errors[f"dst mask{suffix}"] = np.abs(_nhwc(dst_mask)[..., 0] - r["out_dst_mask"]).max()
    assert max(errors.values()) < 1e-4, errors
    # the check can fail: one wrong convention (HWC flatten) is far outside the tolerance
    assert np.abs(_nhwc(face) - r[f"out_celeb_bgr{suffix}"][:, ::-1]).max() > 1e-2


def test_import_lists_what_it_did_not_take_and_models_list_shows_it(dfl_files: Path, tmp_path: Path):
    proc = _import(tmp_path, dfl_files / "model_tiny" / "tiny_SAEHD_encoder.npy", "--name", "mine")
    assert proc.returncode == 0, proc.stderr
    assert "models_opt_on_gpu" in proc.stdout and "optimiser starts fresh" in proc.stdout
    summary = (tmp_path / "model" / "mine_SAEHD" / "summary.txt").read_text()
    assert "imported from DeepFaceLab SAEHD 'tiny'" in summary and "models_opt_on_gpu" in summary
    listed = run_cli("models", "list", "-w", tmp_path)
    assert "imported from DeepFaceLab at 8" in listed.stdout, listed.stdout
    again = _import(tmp_path, dfl_files / "model_tiny", "--name", "mine")
    assert_clean_error(again, 1, "mine_SAEHD already exists", "--overwrite")
    replaced = _import(tmp_path, dfl_files / "model_tiny", "--name", "mine", "--overwrite")
    assert replaced.returncode == 0, replaced.stderr
    assert [p.name.split("-")[0] for p in (tmp_path / "model" / TRASH).iterdir()] == ["mine_SAEHD"]


def test_an_import_killed_before_its_save_is_finished_by_the_rerun(dfl_files: Path, tmp_path: Path):
    """Found by the kill harness (import-dfl, 4 rounds of 45): killed after it made the model folder
    but before its save's commit, the import left a folder holding only its lock and staging
    folder, and every rerun refused it as an existing model."""
    folder = tmp_path / "model" / "mine_SAEHD"
    (folder / ".saving").mkdir(parents=True)
    (folder / ".saving" / "model.safetensors").write_bytes(b"half a checkpoint")
    (folder / ".lock").write_text("process 1234 since 2026-12-05 04:20:00")
    proc = _import(tmp_path, dfl_files / "model_tiny", "--name", "mine")
    assert proc.returncode == 0, proc.stderr
    assert not (folder / ".saving").exists() and not (tmp_path / "model" / TRASH).exists()
    assert load_network(ModelFolder(folder))[1].state["iteration"] == 8


def _saved_model(root: Path, kind: str, arch: dict, options: dict, seed: int = 0) -> ModelFolder:
    """A facelab model folder with random weights, optimiser state and discriminators."""
    torch.manual_seed(seed)
    net = create_model(kind, **arch)
    specs = model_options.specs(kind)
    full = {n: o.default for n, o in specs.items()} | arch | options if specs else {}
    rec = with_options(recipe(kind), full)
    weights = dict(net.state_dict())
    trained = [(n, p) for n, p in net.named_parameters() if not n.startswith(FROZEN_PREFIXES)]
    opt = OPTIMIZERS[rec.optimizer](trained, lr=1e-4)
    state = {k: torch.rand_like(v) for k, v in opt.state_tensors().items()}
    for prefix, d in for_options(net, full).items():
        weights |= {prefix + k: v for k, v in d.state_dict().items()}
        opt = OPTIMIZERS[rec.optimizer](list(d.named_parameters()), lr=1e-4)
        state |= {prefix + k: torch.rand_like(v) for k, v in opt.state_tensors().items()}
    folder = ModelFolder.of(root, "rt", rec.class_name)
    config = new_config(rec, net.config, full)
    folder.save(config, weights, state, new_state(rec.batch, 1234), "summary\n")
    return folder


@pytest.mark.parametrize("kind, arch, options", [
    ("saehd", {"resolution": 64, "archi": "df-ud", "ae_dims": 32, "e_dims": 16, "d_dims": 16,
               "d_mask_dims": 16}, {"gan_power": 0.1, "true_face_power": 0.2, "face_type": "f"}),
    ("saehd", {"resolution": 64, "archi": "liae-t", "ae_dims": 32, "e_dims": 16, "d_dims": 16,
               "d_mask_dims": 16}, {"adabelief": False}),
    ("amp", {"resolution": 64, "ae_dims": 32, "inter_dims": 32, "e_dims": 16, "d_dims": 16,
             "d_mask_dims": 16, "morph_factor": 0.5}, {"gan_power": 0.1}),
    ("quick96", {}, {}),  # DeepFaceLab's Quick96 is fixed (96 px, 38 M parameters): the real size
])  # fmt: skip
def test_export_then_import_gives_equal_tensors(tmp_path: Path, kind, arch, options):
    folder = _saved_model(tmp_path / "a" / "model", kind, arch, options)
    out = tmp_path / "dfl"
    files = export_model(folder, out)
    names = {p.name for p in files}
    assert f"rt_{folder.class_name}_data.dat" in names and f"rt_{folder.class_name}_src_dst_opt.npy" in names
    if options.get("gan_power"):
        assert {f"rt_{folder.class_name}_GAN.npy", f"rt_{folder.class_name}_GAN_opt.npy"} <= names
    if options.get("true_face_power"):
        assert "rt_SAEHD_code_discriminator.npy" in names
    for p in files:  # plain data in numpy 1.x's spelling, which DeepFaceLab's numpy reads
        if p.suffix in (".npy", ".dat"):
            assert _globals(p.read_bytes()) <= NUMPY_1, p
    proc = _import(tmp_path / "b", out)
    assert proc.returncode == 0, proc.stderr
    assert "starts fresh" not in proc.stdout, proc.stdout
    a, b = folder.load(), ModelFolder.of(tmp_path / "b" / "model", "rt", folder.class_name).load()
    assert set(a.weights) == set(b.weights) and set(a.optimizer) == set(b.optimizer)
    for k in a.weights:
        assert torch.equal(a.weights[k], b.weights[k]), k
    for k in a.optimizer:
        assert torch.equal(a.optimizer[k], b.optimizer[k]), k
    assert b.state["iteration"] == 1234
    assert {k: v for k, v in b.config["options"].items()} == a.config["options"]


def _globals(data: bytes) -> set[tuple[str, str]]:
    seen = set()

    class Recorder(pickle.Unpickler):
        def find_class(self, module, name):
            seen.add((module, name))
            return super().find_class(module, name)

    Recorder(io.BytesIO(data)).load()
    return seen


def test_resume_training_and_merge_after_import(dfl_files: Path, faces_ws: Path, tmp_path: Path):
    ws = tmp_path / "ws"
    shutil.copytree(faces_ws, ws)
    assert _import(ws, dfl_files / "model_tiny").returncode == 0
    trained = run_cli("train", "--name", "tiny", "--target-iter", "11", "--no-preview", "-w", ws, "-q", "-y")
    assert trained.returncode == 0, trained.stderr
    ckpt = ModelFolder.of(ws / "model", "tiny", "SAEHD").load()
    assert ckpt.state["iteration"] == 11
    points = [p[0] for p in ckpt.state["history"]["buckets"]]
    assert points[:8] == list(range(1, 9)) and points[-1] == 11  # DFL's 8 iterations, then ours
    assert ckpt.config["options"]["batch_size"] == 4 and ckpt.config["options"]["archi"] == "df-ud"
    assert ckpt.optimizer, "training saves its optimiser state"
    merged = run_cli("merge", "--model", "tiny", "--frames", "1-4", "-w", ws, "-q")
    assert merged.returncode == 0, merged.stderr
    assert len(list((ws / "data_dst" / "merged").glob("*.png"))) == 4


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    for p in dst.iterdir():
        p.chmod(0o644)
    return dst


class _Payload:
    def __init__(self, target: Path):
        self.target = target

    def __reduce__(self):
        return (os.system, (f"touch {self.target}",))


def test_bad_dfl_files_are_refused_before_anything_is_written(dfl_files: Path, tmp_path: Path):
    ws = tmp_path / "ws"
    model_dir = ws / "model"

    def refused(path: Path, *words: str, extra: tuple[str, ...] = ()) -> None:
        proc = _import(ws, path, *extra)
        assert_clean_error(proc, 1, *words)
        assert not model_dir.exists() or not any(model_dir.iterdir()), list(model_dir.iterdir())

    # a pickle that would run a command: refused, and the command never runs
    evil = _copy(dfl_files / "model_tiny", tmp_path / "evil")
    marker = tmp_path / "pwned"
    (evil / "tiny_SAEHD_data.dat").write_bytes(pickle.dumps({"options": _Payload(marker)}))
    refused(evil, "tiny_SAEHD_data.dat", "refused to load posix.system")
    assert not marker.exists()
    evil_npy = _copy(dfl_files / "model_tiny", tmp_path / "evil_npy")
    (evil_npy / "tiny_SAEHD_inter.npy").write_bytes(pickle.dumps({"dense1/weight:0": _Payload(marker)}))
    refused(evil_npy, "tiny_SAEHD_inter.npy", "refused to load")
    assert not marker.exists()
    # a truncated weights file
    cut = _copy(dfl_files / "model_tiny", tmp_path / "cut")
    data = (cut / "tiny_SAEHD_decoder_src.npy").read_bytes()
    (cut / "tiny_SAEHD_decoder_src.npy").write_bytes(data[: len(data) // 2])
    refused(cut, "tiny_SAEHD_decoder_src.npy", "truncated")
    # no _data.dat
    nodata = _copy(dfl_files / "model_tiny", tmp_path / "nodata")
    (nodata / "tiny_SAEHD_data.dat").unlink()
    refused(nodata, "nodata", "_data.dat")
    # two models and no --model-name (then --model-name picks one)
    both = _copy(dfl_files / "model_tiny", tmp_path / "both")
    for p in (dfl_files / "model_liae").iterdir():
        shutil.copy(p, both / p.name)
    refused(both, "tiny (SAEHD)", "liae (SAEHD)", "--model-name")
    assert _import(ws, both, "--model-name", "liae").returncode == 0
    shutil.rmtree(model_dir)
    # an unknown model class
    odd = tmp_path / "odd"
    odd.mkdir()
    for p in (dfl_files / "model_tiny").iterdir():
        shutil.copy(p, odd / p.name.replace("_SAEHD_", "_Fancy_"))
    refused(odd, "tiny_Fancy_data.dat", "unknown model class 'Fancy'")
    # tensor shapes that do not match the options
    wrong = _copy(dfl_files / "model_tiny", tmp_path / "wrong")
    d = pickles.load(wrong / "tiny_SAEHD_data.dat")
    d["options"]["ae_dims"] = np.int64(48)
    pickles.dump(wrong / "tiny_SAEHD_data.dat", d)
    refused(wrong, "tiny_SAEHD_inter.npy", "dense1/weight:0 has shape (2048, 64)", "(2048, 48)")
    # a tensor missing from its file
    short = _copy(dfl_files / "model_tiny", tmp_path / "short")
    d = pickles.load(short / "tiny_SAEHD_encoder.npy")
    del d["down1/downs_2/conv1/bias:0"]
    pickles.dump(short / "tiny_SAEHD_encoder.npy", d)
    refused(short, "tiny_SAEHD_encoder.npy", "down1/downs_2/conv1/bias:0 is missing")
    # a part file missing altogether
    gone = _copy(dfl_files / "model_tiny", tmp_path / "gone")
    (gone / "tiny_SAEHD_decoder_dst.npy").unlink()
    refused(gone, "tiny_SAEHD_decoder_dst.npy is missing")


def test_xseg_import_takes_every_array_dfl_lists(dfl_files: Path, tmp_path: Path):
    """DFL's XSeg weights are 70 MB, so shared/ has their manifest (every array's name and shape):
    a folder made from it in DFL's format imports with every tensor in place and its RMSprop state."""
    manifest = json.loads((dfl_files / "model_xseg" / "XSeg_256_manifest.json").read_text())
    rng = np.random.default_rng(0)
    dfl = tmp_path / "dfl"
    dfl.mkdir()
    files = {}
    for name in ("XSeg_256.npy", "XSeg_256_opt.npy"):
        arrays = {k: rng.standard_normal(shape).astype(dtype) for k, (shape, dtype) in
                  manifest[name]["arrays"].items()}  # fmt: skip
        pickles.dump(dfl / name, arrays)
        files[name] = arrays
    data = manifest["XSeg_data.dat"]
    pickles.dump(dfl / "XSeg_data.dat", {"iter": data["iter"], "options": data["options"],
                                         "loss_history": data["loss_history"]})  # fmt: skip
    proc = _import(tmp_path / "ws", dfl)
    assert proc.returncode == 0, proc.stderr
    ckpt = ModelFolder.of(tmp_path / "ws" / "model", "xseg", "XSeg").load()
    assert ckpt.config["architecture"] == {"name": "xseg", "resolution": 256, "base_ch": 32}
    assert ckpt.config["face_type"] == "whole_face" and ckpt.state["iteration"] == 5
    assert len(ckpt.weights) == len(files["XSeg_256.npy"]) == 222
    for ours, t in ckpt.weights.items():
        dfl_name = f"{ours.replace('.', '/')}:0"
        assert torch.equal(names.to_dfl(t), torch.from_numpy(files["XSeg_256.npy"][dfl_name])), ours
    opt = files["XSeg_256_opt.npy"]
    for ours, t in ckpt.optimizer.items():
        key = f"acc_XSeg/{ours.removeprefix('acc/').replace('.', '/')}_0:0"
        assert torch.equal(names.to_dfl(t), torch.from_numpy(opt[key])), ours
    assert len(ckpt.optimizer) == 222
    net, _ = load_network(ModelFolder.of(tmp_path / "ws" / "model", "xseg", "XSeg"))
    assert net(torch.rand(1, 3, 256, 256)).shape == (1, 1, 256, 256)


def test_xseg_layers_follow_tensorflow_semantics():
    """XSeg's layers against TensorFlow's definitions written out in numpy: the stride-2 SAME
    transposed conv (out[2i + k] += in[i] * w[k], output 2n), BlurPool's asymmetric zero padding,
    FRN and TLU."""
    rng = np.random.default_rng(1)
    up = UpConvBlock(3, 2)
    x = rng.standard_normal((1, 3, 5, 5)).astype(np.float32)
    w = up.conv.weight.detach().numpy()  # (in, out, k, k)
    ref = np.zeros((1, 2, 11, 11), np.float32)
    for i in range(5):
        for j in range(5):
            ref[0, :, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3] += np.einsum("c,cokl->okl", x[0, :, i, j], w)
    ref = ref[:, :, :10, :10] + up.conv.bias.detach().numpy()[None, :, None, None]
    with torch.no_grad():
        got = up.conv(torch.from_numpy(x))[..., :10, :10].numpy()
    assert np.abs(got - ref).max() < 1e-5
    for size, a in ((2, [1, 1]), (3, [1, 2, 1]), (4, [1, 3, 3, 1])):
        img = rng.standard_normal((1, 1, 8, 8)).astype(np.float32)
        k = np.outer(a, a) / np.sum(np.outer(a, a))
        before, after = (size - 1) // 2, size - 1 - (size - 1) // 2
        padded = np.pad(img[0, 0], ((before, after), (before, after)))
        ref = np.array([[np.sum(padded[2 * i : 2 * i + size, 2 * j : 2 * j + size] * k) for j in range(4)]
                        for i in range(4)])  # fmt: skip
        assert np.abs(BlurPool(1, size)(torch.from_numpy(img))[0, 0].numpy() - ref).max() < 1e-6, size
    frn, tlu = FRN(2), TLU(2)
    with torch.no_grad():
        frn.weight.copy_(torch.tensor([2.0, 0.5]))
        frn.bias.copy_(torch.tensor([0.1, -0.2]))
        frn.eps.copy_(torch.tensor([-1e-3]))
        tlu.tau.copy_(torch.tensor([0.0, -0.5]))
        x = rng.standard_normal((1, 2, 4, 4)).astype(np.float32)
        nu2 = (x**2).mean(axis=(2, 3), keepdims=True)
        per_channel = (slice(None), None, None)
        ref = x / np.sqrt(nu2 + 1e-3) * np.array([2.0, 0.5])[per_channel] + np.array([0.1, -0.2])[per_channel]
        assert np.abs(frn(torch.from_numpy(x)).numpy() - ref).max() < 1e-5
        tau = np.array([0, -0.5])[per_channel]
        assert np.array_equal(tlu(torch.from_numpy(x)).numpy(), np.maximum(x, tau))


@pytest.mark.parametrize("folder, manifest, kind, arch", [
    ("model_liae", "liae_SAEHD_src_dst_opt_manifest.json", "saehd",
     {"resolution": 64, "archi": "liae-udt", "ae_dims": 32, "e_dims": 16, "d_dims": 16, "d_mask_dims": 16}),
    ("model_amp", "amp_AMP_src_dst_opt_manifest.json", "amp",
     {"resolution": 64, "ae_dims": 32, "inter_dims": 32, "e_dims": 16, "d_dims": 16, "d_mask_dims": 16,
      "morph_factor": 0.5}),
])  # fmt: skip
def test_optimizer_files_dfl_wrote_map_onto_ours_one_to_one(dfl_files: Path, tmp_path: Path, folder, manifest,
                                                           kind, arch):  # fmt: skip
    """DFL's optimiser files are too large for shared/, but their manifests list every array: an
    AdaBelief file with exactly those names and shapes imports completely (AMP's inters untrained)."""
    listed = json.loads((dfl_files / folder / manifest).read_text())["arrays"]
    dfl = _copy(dfl_files / folder, tmp_path / "dfl")
    rng = np.random.default_rng(0)
    arrays = {k: (np.int64(8) if k == "iters:0" else rng.standard_normal(shape).astype(dtype))
              for k, (shape, dtype) in listed.items()}  # fmt: skip
    pickles.dump(dfl / manifest.replace("_manifest.json", ".npy"), arrays)
    proc = _import(tmp_path / "ws", dfl)
    assert proc.returncode == 0, proc.stderr
    assert "starts fresh" not in proc.stdout and "start at zero" not in proc.stdout, proc.stdout
    (found,) = (tmp_path / "ws" / "model").iterdir()
    ckpt = ModelFolder(found).load()
    assert len(ckpt.optimizer) == len(listed) - 1  # every array but the iteration counter
    net = create_model(kind, **arch)
    dfl_names = names.parts(net)
    for ours, t in ckpt.optimizer.items():
        slot, _, param = ours.partition("/")
        part, key = dfl_names[param]
        dfl_key = f"{'ms' if slot == 'm' else 'vs'}_{part}/{key.replace(':', '_')}:0"
        assert torch.equal(names.to_dfl(t), torch.from_numpy(arrays[dfl_key])), ours
