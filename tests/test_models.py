"""One test template applied to every registered model and architecture variant (timm style)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from facelab.models import create_model, list_models
from facelab.models.blocks import depth_to_space
from facelab.models.folder import ModelFolder, load_network

TINY = {"ae_dims": 32, "e_dims": 16, "d_dims": 16, "d_mask_dims": 16}
CASES = (
    [("quick96", {"resolution": 64, **TINY})]
    + [
        ("saehd", {"resolution": 64, "archi": f"{kind}{flags}", **TINY})
        for kind in ("df", "liae")
        for flags in ("", "-u", "-d", "-t", "-ud", "-udt")
    ]
    + [("amp", {"resolution": 64, "inter_dims": 32, "morph_factor": 0.5, **TINY})]
)


SEGMENTATION = [("xseg", {"resolution": 64, "base_ch": 8}), ("xseg", {"resolution": 128, "base_ch": 4})]


def test_every_registered_model_is_covered():
    assert {name for name, _ in CASES + SEGMENTATION} == set(list_models())


@pytest.mark.parametrize("name,opts", SEGMENTATION, ids=[f"{n}-{o['resolution']}" for n, o in SEGMENTATION])
def test_segmentation_forward_backward_shapes_and_round_trip(tmp_path: Path, name: str, opts: dict):
    torch.manual_seed(0)
    model = create_model(name, **opts)
    res = opts["resolution"]
    faces = torch.rand(2, 3, res, res)
    logits = model(faces)
    assert logits.shape == (2, 1, res, res)
    loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, (faces[:, :1] > 0.5).float())
    loss.backward()
    assert all(p.grad is not None and float(p.grad.abs().sum()) > 0 for p in model.parameters())
    assert model(faces, pretrain=True).shape == logits.shape
    folder = ModelFolder.of(tmp_path, "m", name)
    folder.save({"architecture": model.config}, model.state_dict(), {}, {"iteration": 1}, "")
    again, _ = load_network(folder)
    mask = again.mask(faces)
    assert torch.equal(mask, model.eval().mask(faces)) and float(mask.min()) >= 0 and float(mask.max()) <= 1


@pytest.mark.parametrize("name,opts", CASES, ids=[f"{n}-{o.get('archi', 'fixed')}" for n, o in CASES])
def test_forward_backward_shapes_and_round_trip(tmp_path: Path, name: str, opts: dict):
    torch.manual_seed(0)
    model = create_model(name, **opts)
    res = opts["resolution"]
    src, dst = torch.rand(2, 3, res, res), torch.rand(2, 3, res, res)
    out = model(src, dst)
    for key in ("src", "dst", "swap"):
        assert out[key].shape == (2, 3, res, res)
        assert out[f"{key}_mask"].shape == (2, 1, res, res)
        assert float(out[key].detach().min()) >= 0 and float(out[key].detach().max()) <= 1
    loss = sum((out[k] - t).pow(2).mean() + out[f"{k}_mask"].mean() for k, t in (("src", src), ("dst", dst)))
    loss.backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and float(g.abs().sum()) > 0 for g in grads)  # every weight learns
    model.eval()
    folder = ModelFolder.of(tmp_path, "m", name)  # the real format, as training saves it
    folder.save({"architecture": model.config}, model.state_dict(), {}, {"iteration": 1}, "")
    again, ckpt = load_network(folder)
    assert again.config == model.config and not again.training and ckpt.state["iteration"] == 1
    face, mask, dst_mask = model.swap(dst)
    face2, mask2, dst_mask2 = again.swap(dst)
    assert torch.equal(face, face2) and torch.equal(mask, mask2) and torch.equal(dst_mask, dst_mask2)


def test_quick96_matches_the_reference_layout():
    model = create_model("quick96")
    params = sum(p.numel() for p in model.parameters())
    assert abs(params - 38.3e6) / 38.3e6 < 0.01  # DeepFaceLab's Quick96 has 38.3 M
    out = model(torch.rand(1, 3, 96, 96), torch.rand(1, 3, 96, 96))
    assert out["swap"].shape == (1, 3, 96, 96) and out["swap_mask"].shape == (1, 1, 96, 96)


def test_depth_to_space_is_tensorflow_dcr():
    x = torch.arange(2 * 2 * 4 * 1 * 1, dtype=torch.float32).view(2, 8, 1, 1)  # C = 2 output channels
    y = depth_to_space(x)
    # out[c, i, j] = in[(i*2 + j)*C + c]
    assert y[0, 0].flatten().tolist() == [0.0, 2.0, 4.0, 6.0]
    assert y[0, 1].flatten().tolist() == [1.0, 3.0, 5.0, 7.0]


def test_bad_options_are_refused():
    with pytest.raises(ValueError, match="multiple of 32"):
        create_model("saehd", resolution=80, archi="liae-ud")
    with pytest.raises(ValueError, match="unknown architecture"):
        create_model("saehd", archi="vae")
    with pytest.raises(ValueError, match="no option"):
        create_model("quick96", colour=3)
    with pytest.raises(ValueError, match="unknown model"):
        create_model("amp2")
