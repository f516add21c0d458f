"""SAEHD's option system and the options that exist so far: each one takes effect."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from facelab.errors import UsageError
from facelab.options import load_config
from facelab.train import model_options as mo
from facelab.train.augment import sample_generators
from facelab.train.losses import saehd_face_loss
from facelab.train.optim import AdaBelief
from facelab.train.recipes import recipe, with_options
from facelab.train.trainer import TrainOptions, train
from facelab.workspace import Workspace
from tests.conftest import assert_clean_error, on_a_terminal, run_cli

TINY = {"resolution": 64, "ae_dims": 32, "e_dims": 16, "d_dims": 16, "d_mask_dims": 16, "batch_size": 2}


def _options(**changes) -> dict:
    return {o.name: o.default for o in mo.SAEHD} | TINY | changes


def test_flags_and_config_files_are_checked():
    assert mo.parse_pairs("saehd", ["resolution=96", "random_src_flip=y"]) == {
        "resolution": 96,
        "random_src_flip": True,
    }
    with pytest.raises(UsageError, match="resolution must be from 64 to 640, not '32'"):
        mo.parse_pairs("saehd", ["resolution=32"])
    with pytest.raises(
        UsageError, match="saehd has no option 'gan_powr' .*its options: resolution, face_type"
    ):
        mo.parse_pairs("saehd", ["gan_powr=1"])
    with pytest.raises(UsageError, match="quick96 has no option 'resolution' .*fixed"):
        mo.parse_pairs("quick96", ["resolution=96"])
    with pytest.raises(UsageError, match="e_dims: must be even"):
        mo.parse_pairs("saehd", ["e_dims=33"])
    with pytest.raises(UsageError, match="unknown architecture"):
        mo.parse_pairs("saehd", ["archi=vae"])


def test_config_file_with_a_wrong_type(tmp_path: Path):
    cfg = tmp_path / "o.yaml"
    cfg.write_text("batch_size: lots\n")
    with pytest.raises(UsageError, match="o.yaml: batch_size must be 1 to 256, not 'lots'"):
        load_config(cfg, mo.SAEHD)


def test_fixed_options_refused_on_resume_changeable_ones_apply():
    saved = _options()
    with pytest.raises(UsageError, match="resolution, archi cannot change .*fixed: resolution, face_type"):
        mo.for_resumed_model("saehd", saved, {"resolution": 96, "archi": "df", "batch_size": 4}, False)
    out = mo.for_resumed_model("saehd", saved, {"batch_size": 4, "random_warp": False}, False)
    assert out["batch_size"] == 4 and out["random_warp"] is False and out["resolution"] == 64


def test_last_options_become_the_next_defaults(tmp_path: Path):
    first = mo.for_new_model("saehd", "SAEHD", tmp_path, TINY | {"eyes_mouth_prio": True})
    second = mo.for_new_model("saehd", "SAEHD", tmp_path, {})
    assert second == first and second["eyes_mouth_prio"] is True


def test_options_shape_the_recipe_and_batches():
    base = recipe("saehd")
    r = with_options(base, _options(random_src_flip=True, random_dst_flip=False, random_warp=False))
    assert r.augment_for("src").random_flip and not r.augment_for("dst").random_flip
    assert not r.augment.random_warp
    from facelab.train.augment import augment

    images = (torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0)) * 255).byte()
    masks = torch.full((8, 2, 32, 32), 255, dtype=torch.uint8)

    def draws():
        return sample_generators(1, start=0, count=len(images))

    warped, target, _ = augment(images, masks, r.augment_for("dst"), draws(), warp=True)
    assert torch.equal(warped, target)  # warp off: the input is the target
    flipped = augment(images, masks, r.augment_for("src"), draws(), warp=True)[1]
    plain = augment(images, masks, r.augment_for("dst"), draws(), warp=True)[1]
    assert not torch.equal(flipped, plain)  # same draws, flips on for src only
    assert with_options(base, _options(lr_dropout=True)).lr_cycle == 500
    assert with_options(base, _options(adabelief=False)).optimizer == "rmsprop"


def test_eyes_mouth_prio_weights_the_loss():
    g = torch.Generator().manual_seed(0)
    target, pred = torch.rand(2, 3, 64, 64, generator=g), torch.rand(2, 3, 64, 64, generator=g)
    masks = torch.zeros(2, 2, 64, 64)
    masks[:, 0, 8:56, 8:56] = 1
    masks[:, 1, 20:30, 16:48] = 1
    plain = saehd_face_loss(pred, masks[:, :1], target, masks, True, False)
    prio = saehd_face_loss(pred, masks[:, :1], target, masks, True, True)
    assert (prio > plain + 1).all()
    unmasked = saehd_face_loss(pred, masks[:, :1], target, masks, False, False)
    assert not torch.allclose(plain, unmasked)  # masked_training changes what is compared


def test_adabelief_matches_the_reference_update():
    w = torch.nn.Parameter(torch.zeros(4))
    opt = AdaBelief([("w", w)], lr=0.1)
    w.grad = torch.tensor([1.0, -2.0, 0.5, 0.0])
    opt.step(0)
    m = 0.1 * w.grad
    v = 0.001 * (w.grad - m) ** 2
    assert torch.allclose(w.detach(), -0.1 * m / (v.sqrt() + 1e-6))
    assert set(opt.state_tensors()) == {"acc/w", "m/w"}


def test_saehd_trains_with_every_option_and_clipgrad_bounds_the_gradient(train_ws: Path, monkeypatch):
    norms = []
    real_step = AdaBelief.step

    def spy(self, step, lr=None, **kw):
        norms.append(float(torch.linalg.vector_norm(torch.stack([p.grad.norm() for p in self.params]))))
        return real_step(self, step, lr, **kw)

    monkeypatch.setattr(AdaBelief, "step", spy)
    opts = _options(eyes_mouth_prio=True, lr_dropout=True, clipgrad=True, random_src_flip=True)
    res = train(Workspace(train_ws), recipe("saehd"), "all", TrainOptions(target_iter=4, model_options=opts,
                                                                        preview=False, seed=1))  # fmt: skip
    assert res.iteration == 4 and max(norms) <= 1.0 + 1e-4
    config = (res.folder / "config.json").read_text()
    assert '"eyes_mouth_prio": true' in config and '"resolution": 64' in config
    # Resume with a changed option: it takes effect (and the optimiser switch starts fresh state).
    changed = {"adabelief": False, "batch_size": 3}
    res = train(Workspace(train_ws), recipe("saehd"), "all",
                TrainOptions(target_iter=6, model_options=changed, preview=False))  # fmt: skip
    state = (res.folder / "state.json").read_text()
    assert '"batch": 3' in state and '"optimizer": "rmsprop"' in (res.folder / "config.json").read_text()
    proc = run_cli("train", "--model", "saehd", "--name", "all", "--opt", "d_dims=32", "-w", train_ws)
    assert_clean_error(proc, 2, "d_dims cannot change after the model is created")


def test_option_prompts_on_a_terminal(train_ws: Path):
    cmd = [sys.executable, "-m", "facelab", "train", "--model", "saehd", "--name", "asked",
           "--target-iter", "1", "--no-preview", "-w", str(train_ws)]  # fmt: skip
    answers = {b"] resolution (": [b"50", b"64"], b"] face_type (": [b"?", b""], b"] ae_dims (": [b"32"],
               b"] e_dims (": [b"16"], b"] d_dims (": [b"16"], b"] d_mask_dims (": [b"16"],
               b"] batch_size (": [b"2"]}  # fmt: skip
    code, text = on_a_terminal(cmd, answers)
    assert code == 0, text[-3000:]
    assert "[128] resolution (64 to 640, ? for help): " in text
    assert "resolution must be from 64 to 640, not '50'" in text  # out of range: asked again
    assert "how much of the head" in text  # ? shows the help
    assert "[y] random_dst_flip (yes or no" in text
    config = (train_ws / "model" / "asked_SAEHD" / "config.json").read_text()
    assert (
        '"resolution": 64' in config and '"face_type": "full_face"' in config and '"batch_size": 2' in config
    )

    # Resume: Enter within the 2-second window asks the changeable options again, never the fixed ones.
    cmd = [sys.executable, "-m", "facelab", "train", "--model", "saehd", "--name", "asked", "--no-preview",
           "-w", str(train_ws)]  # fmt: skip
    answers = {b"] batch_size (": [b"3"], b"] target_iter (": [b"3"]}
    code, text = on_a_terminal(cmd, answers, triggers=((b"to override the model's settings", b"\n"),))
    assert code == 0, text[-3000:]
    assert "[1] target_iter (0 to 1000000000, ? for help)" in text and "] resolution (" not in text, text
    assert "Resuming SAEHD 'asked' at iteration 1: batch 3" in text and "at iteration 3; saved" in text
    # --override asks at once; without a terminal it keeps the saved values, so this stops at once.
    code, text = on_a_terminal(cmd + ["--override"], {b"] target_iter (": [b"4"]})
    assert code == 0 and "Press Enter within" not in text and "at iteration 4; saved" in text, text[-2000:]
    proc = run_cli(*cmd[3:], "--override")
    assert proc.returncode == 0 and "which reaches the target (--target-iter 4)" in proc.stdout, proc.stdout


def test_ct_mode_moves_src_colours_toward_dst():
    from facelab.train.color import color_transfer

    g = torch.Generator().manual_seed(0)
    src = (torch.rand(3, 3, 32, 32, generator=g) * 100).byte()  # dark
    dst = (155 + torch.rand(3, 3, 32, 32, generator=g) * 100).byte()  # bright
    masks = torch.full((3, 2, 32, 32), 255, dtype=torch.uint8)
    for mode in ("rct", "lct", "mkl", "idt", "sot"):
        out = color_transfer(src, dst, masks, mode)
        assert out.dtype == torch.uint8 and out.shape == src.shape
        gap_before = abs(float(src.float().mean() - dst.float().mean()))
        assert abs(float(out.float().mean() - dst.float().mean())) < 0.3 * gap_before, mode


def test_hsv_jitter_and_uniform_yaw():
    from facelab.train.augment import YawSampler
    from facelab.train.color import hsv_jitter

    batch = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 0.5 + 0.25
    out = hsv_jitter(batch, 0.3, sample_generators(3, start=0, count=len(batch)))
    assert out.shape == batch.shape and not torch.allclose(out, batch, atol=0.02)
    yaws = [0.0] * 90 + [1.0] * 10  # mostly frontal faces, a few turned
    picks = YawSampler(yaws, seed=0, side="src").indices(0, 1000)
    turned = float((picks >= 90).float().mean())
    assert 0.4 < turned < 0.6  # two occupied bins: each drawn about half the time


def test_blur_out_mask_changes_the_target_outside_the_face():
    g = torch.Generator().manual_seed(0)
    target, pred = torch.rand(2, 3, 64, 64, generator=g), torch.rand(2, 3, 64, 64, generator=g)
    masks = torch.zeros(2, 2, 64, 64)
    masks[:, 0, 16:48, 16:48] = 1
    a = saehd_face_loss(pred, masks[:, :1], target, masks, False, False, blur_out_mask=False)
    b = saehd_face_loss(pred, masks[:, :1], target, masks, False, False, blur_out_mask=True)
    assert not torch.allclose(a, b)


def test_saehd_trains_with_colour_and_sampling_options(train_ws: Path):
    """Each option takes effect: ct_mode and random_hsv_power change the src batch, uniform_yaw the
    faces drawn, blur_out_mask the loss on the same batch; and all of them together train."""
    from facelab.models.folder import ModelFolder
    from facelab.train.trainer import TrainingRun

    ws = Workspace(train_ws)

    def opened(name: str, **changes) -> TrainingRun:
        folder = ModelFolder.of(ws.model_dir, name, "SAEHD")
        options = TrainOptions(model_options=_options(**changes), seed=2)
        return TrainingRun(ws, recipe("saehd"), folder, options)

    base = opened("base")
    batches = base.next_batches()
    for option, value in (("ct_mode", "rct"), ("random_hsv_power", 0.1), ("uniform_yaw", True)):
        run = opened(option, **{option: value})
        other = run.next_batches()
        if option != "uniform_yaw":  # the colour options touch src only; uniform_yaw draws both sides
            assert torch.equal(other["dst"][0], batches["dst"][0]), option
        assert not torch.equal(other["src"][0], batches["src"][0]), f"{option} changed nothing"
    warped, target, masks = batches["src"]
    pred, pred_mask = torch.full_like(target, 0.5), masks[:, :1]
    blurred = opened("blur", blur_out_mask=True)
    assert not torch.equal(base.loss(pred, pred_mask, target, masks),
                           blurred.loss(pred, pred_mask, target, masks))  # fmt: skip

    opts = _options(
        ct_mode="rct", random_hsv_power=0.1, uniform_yaw=True, blur_out_mask=True, masked_training=False
    )
    res = train(ws, recipe("saehd"), "colour",
                TrainOptions(target_iter=3, model_options=opts, preview=False, seed=2))  # fmt: skip
    assert res.iteration == 3 and all(v == v for v in res.last_losses)  # finite


def test_target_backup_and_preview_history_are_model_options(train_ws: Path):
    opts = _options(target_iter=10, autobackup_hour=0.0001, write_preview_history=True)
    res = train(Workspace(train_ws), recipe("saehd"), "kept", TrainOptions(model_options=opts, seed=2))
    assert res.iteration == 10 and (res.folder / "history" / "0000010.jpg").is_file()
    assert (res.folder / "_autobackups" / "01" / "model.safetensors").is_file()
    # Saved with the model: a plain resume keeps the target; a flag raises it.
    assert train(Workspace(train_ws), recipe("saehd"), "kept", TrainOptions()).iteration == 10
    assert train(Workspace(train_ws), recipe("saehd"), "kept", TrainOptions(target_iter=11)).iteration == 11


def test_gan_and_true_face_train_their_discriminators(train_ws: Path):
    from safetensors.torch import load_file

    from facelab.merge.pipeline import MergeModel
    from facelab.models.folder import ModelFolder

    opts = _options(
        archi="df-ud", gan_power=0.1, true_face_power=0.2, face_style_power=5.0, bg_style_power=5.0
    )
    ws = Workspace(train_ws)
    res = train(
        ws, recipe("saehd"), "adv", TrainOptions(target_iter=1, model_options=opts, preview=False, seed=3)
    )
    first = load_file(str(res.folder / "model.safetensors"))
    assert any(k.startswith("gan.") for k in first) and any(k.startswith("code_d.") for k in first)
    res = train(ws, recipe("saehd"), "adv", TrainOptions(target_iter=3, preview=False))
    later = load_file(str(res.folder / "model.safetensors"))
    for prefix in ("gan.", "code_d."):
        keys = [k for k in first if k.startswith(prefix)]
        assert any(not torch.equal(first[k], later[k]) for k in keys), prefix  # the discriminator trained
    assert any(k.startswith("gan.") for k in load_file(str(res.folder / "optimizer.safetensors")))
    MergeModel(ModelFolder(res.folder))  # the merger loads the model without its discriminators
    with pytest.raises(UsageError, match="true_face_power works with df"):
        mo.for_new_model(
            "saehd", "SAEHD", train_ws / "model", TINY | {"archi": "liae-ud", "true_face_power": 0.5}
        )


def test_amp_gan_judges_both_sides_and_keeps_the_dst_background():
    from facelab.models import create_model
    from facelab.train.extras import ExtraLosses

    amp = create_model("amp", resolution=64, ae_dims=32, inter_dims=64, e_dims=16, d_dims=16, d_mask_dims=16)
    g = torch.Generator().manual_seed(0)
    face = torch.rand(2, 3, 64, 64, generator=g)
    masks = torch.zeros(2, 2, 64, 64)
    masks[:, :, 16:48, 16:48] = 1  # the face in the middle, background around it
    batches = {s: (face, face, masks) for s in ("src", "dst")}

    def terms(r, dst_pred):
        torch.manual_seed(0)  # the same discriminator weights for every call
        extras = ExtraLosses(r, amp, 0, torch.device("cpu"))
        with torch.no_grad():
            out = {"src": face, "dst": dst_pred}
            return extras.generator_terms(out, batches, extras.soft_masks(batches)).item()

    other = face.clone()
    other[:, :, 20:44, 20:44] = 0.5  # a change inside the face only
    background = face.clone()
    background[:, :, :8] = 0  # a change in the background only
    for kind, dst_counts in (("amp", True), ("saehd", False)):
        r = with_options(recipe(kind), {**{o.name: o.default for o in mo.OPTIONS[kind]}, "gan_power": 0.1})
        # Inside the face: only the GAN sees it, and only AMP's GAN judges dst.
        assert (terms(r, other) != terms(r, face)) is dst_counts, kind
    r = with_options(recipe("amp"), {o.name: o.default for o in mo.AMP})  # no GAN
    assert terms(r, background) > terms(r, face) + 1e-3  # 0.1 x MSE on the dst background


def test_style_loss():
    from facelab.train.extras import style_loss

    a = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(style_loss(a, a, 2, 100.0), torch.zeros(2))
    assert (style_loss(a, a * 0.5, 2, 100.0) > 0.1).all()


def test_pretrain_ignores_dst_and_ending_it_restarts(train_ws: Path, tmp_path: Path):
    import shutil

    ws = Workspace(train_ws)
    shutil.rmtree(train_ws / "data_dst" / "aligned")  # pretraining must not need (or read) the dst set
    pretrain_faces = train_ws / "data_src" / "aligned"
    opts = TrainOptions(target_iter=3, model_options=_options(pretrain=True), preview=False, seed=4,
                        pretrain_faces=pretrain_faces)  # fmt: skip
    res = train(ws, recipe("saehd"), "pre", opts)
    assert res.iteration == 3
    state = (res.folder / "state.json").read_text()
    assert '"dst": ' in state
    from facelab.models.folder import ModelFolder

    before = ModelFolder(res.folder).load().weights
    with pytest.raises(Exception, match="pretrain needs --pretrain-faces"):
        train(ws, recipe("saehd"), "pre", TrainOptions(target_iter=4, preview=False))
    shutil.copytree(pretrain_faces, train_ws / "data_dst" / "aligned")
    res = train(ws, recipe("saehd"), "pre", TrainOptions(target_iter=2, model_options={"pretrain": False},
                                                         preview=False))  # fmt: skip
    assert res.iteration == 2  # counted again from 0
    after = ModelFolder(res.folder).load().weights
    changed = {k.split(".")[0] for k in before if not torch.equal(before[k], after[k])}
    assert {"inter_AB", "inter_B"} <= changed


def test_amp_trains_only_encoder_and_decoder_and_morph_changes_the_merge(train_ws: Path, tmp_path: Path):
    import numpy as np
    from safetensors.torch import load_file

    from facelab.merge.pipeline import MergeModel
    from facelab.models.folder import ModelFolder

    amp = {"resolution": 64, "face_type": "f", "ae_dims": 32, "inter_dims": 64, "e_dims": 16, "d_dims": 16,
           "d_mask_dims": 16, "batch_size": 2}  # fmt: skip
    ws = Workspace(train_ws)
    res = train(
        ws, recipe("amp"), "amp", TrainOptions(target_iter=1, model_options=amp, preview=False, seed=6)
    )
    first = load_file(str(res.folder / "model.safetensors"))
    res = train(ws, recipe("amp"), "amp", TrainOptions(target_iter=3, preview=True))
    later = load_file(str(res.folder / "model.safetensors"))
    # The preview: header + graph, then the 2x3 grid and the 2x3 morph list side by side (390 px
    # wide at 64 px faces, scaled up to the 480 px minimum).
    import cv2

    shown = cv2.imread(str(res.folder / "preview.jpg"))
    assert shown.shape == (54 + 100 + 2 * 64 * 480 // 390, 480, 3)
    changed = {k.split(".")[0] for k in first if not torch.equal(first[k], later[k])}
    assert changed == {"encoder", "encoder_dense", "decoder"}  # the inters keep their random weights
    assert set(load_file(str(res.folder / "optimizer.safetensors"))) == {
        f"{s}/{k}" for k in later if not k.startswith("inter_") for s in ("acc", "m")
    }
    model = MergeModel(ModelFolder(res.folder))
    crops = np.random.default_rng(0).random((2, 64, 64, 3), dtype=np.float32)
    full, _, _ = model.predict(crops, 1.0)
    half, _, _ = model.predict(crops, 0.3)
    mixed, _, _ = model.predict(crops, np.array([1.0, 0.3]))
    assert not np.allclose(full, half)
    assert np.allclose(mixed[0], full[0], atol=1e-5) and np.allclose(mixed[1], half[1], atol=1e-5)


@pytest.mark.parametrize("kind", ["saehd", "amp"])
def test_small_saehd_and_amp_learn_on_real_faces(train_ws: Path, kind: str):
    small = {"resolution": 64, "ae_dims": 64, "e_dims": 16, "d_dims": 16, "d_mask_dims": 16, "batch_size": 4}
    small |= {"archi": "liae-ud"} if kind == "saehd" else {"inter_dims": 128, "face_type": "f"}
    res = train(Workspace(train_ws), recipe(kind), f"learn-{kind}",
                TrainOptions(target_iter=300, model_options=small, seed=5))  # fmt: skip
    drops = [1 - last / first for first, last in zip(res.first_losses, res.last_losses, strict=True)]
    assert min(drops) >= 0.30, (kind, res.first_losses, res.last_losses)


def test_a_small_saehd_merges_through_the_merger(faces_ws: Path, tmp_path: Path):
    import shutil

    import cv2
    import numpy as np

    ws = tmp_path / "ws"
    shutil.copytree(faces_ws, ws)
    small = TINY | {"archi": "liae-ud", "gan_power": 0.1}
    train(
        Workspace(ws), recipe("saehd"), "sm", TrainOptions(target_iter=5, model_options=small, preview=False)
    )
    proc = run_cli("merge", "--model", "sm", "--frames", "1-5", "-w", ws, "-q")
    assert proc.returncode == 0 and "merged 5 frames (5 faces" in proc.stdout, proc.stderr
    orig = cv2.imread(str(ws / "data_dst" / "00003.png"))
    merged = cv2.imread(str(ws / "data_dst" / "merged" / "00003.png"))
    assert merged.shape == orig.shape and not np.array_equal(merged, orig)
