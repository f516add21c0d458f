"""facelab's training extras (model options ema, detail_loss, lr_schedule): what each computes, and
that a model trained with them resumes exactly and is merged with its averaged weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from facelab.models.folder import EMA, ModelFolder, build_network, load_network, network_weights
from facelab.train import model_options as mo
from facelab.train.losses import gradient_loss, mse
from facelab.train.optim import DECAY_FROM, DECAY_TO, WARMUP_ITERS, schedule_factor
from facelab.train.recipes import recipe, with_options
from facelab.train.trainer import train
from facelab.workspace import Workspace
from tests.train_tiny import TINY, tiny_options

EXTRAS = {"ema": 0.9, "detail_loss": 1.0, "lr_schedule": True}


def test_the_schedule_warms_up_holds_and_falls_over_the_budget():
    assert schedule_factor(0, 0.0, 1000, 0.0) == pytest.approx(1 / WARMUP_ITERS)
    assert schedule_factor(WARMUP_ITERS - 1, 0.0, 1000, 0.0) == 1.0
    assert schedule_factor(int(DECAY_FROM * 1000), 0.0, 1000, 0.0) == 1.0
    assert schedule_factor(800, 0.0, 1000, 0.0) == pytest.approx(DECAY_TO + (1 - DECAY_TO) * 0.5)
    assert schedule_factor(1000, 0.0, 1000, 0.0) == pytest.approx(DECAY_TO)
    assert schedule_factor(5000, 0.0, 1000, 0.0) == pytest.approx(DECAY_TO)  # past the budget: stays low
    # A time budget counts the same way, and the further of the two decides.
    assert schedule_factor(500, 960.0, 0, 1200.0) == pytest.approx(DECAY_TO + (1 - DECAY_TO) * 0.5)
    assert schedule_factor(800, 60.0, 1000, 1200.0) == schedule_factor(800, 0.0, 1000, 0.0)
    # No budget: a warm-up, then the recipe's rate for good.
    assert schedule_factor(10**6, 10.0**6, 0, 0.0) == 1.0
    falling = [schedule_factor(i, 0.0, 1000, 0.0) for i in range(600, 1001, 50)]
    assert all(a > b for a, b in zip(falling, falling[1:], strict=False))


def test_the_gradient_loss_sees_a_blur_that_mse_scores_like_a_brightness_shift():
    g = torch.Generator().manual_seed(0)
    target = torch.rand(2, 3, 64, 64, generator=g)
    blurred = torch.nn.functional.avg_pool2d(target, 3, stride=1, padding=1, count_include_pad=False)
    error = mse(blurred, target)
    shifted = target + error.sqrt().view(-1, 1, 1, 1)  # the same MSE, every edge kept
    assert torch.allclose(mse(shifted, target), error, rtol=1e-4)
    assert (gradient_loss(shifted, target) < 1e-5).all()
    assert (gradient_loss(blurred, target) > 0.1).all()


def test_quick96_takes_the_extras_by_flag_only_and_keeps_its_recipe():
    assert all(not o.prompt for o in mo.OPTIONS["quick96"])
    given = mo.parse_pairs("quick96", ["ema=0.999", "detail_loss=1", "lr_schedule=y"])
    r = with_options(recipe("quick96"), given)
    assert (r.ema, r.detail_loss, r.lr_schedule) == (0.999, 1.0, True)
    assert with_options(recipe("quick96"), {}) == recipe("quick96")
    plain = with_options(recipe("quick96"), {o.name: o.default for o in mo.OPTIONS["quick96"]})
    assert plain == recipe("quick96")  # the defaults are the reference's Quick96
    saehd = with_options(recipe("saehd"), {o.name: o.default for o in mo.SAEHD} | {"ema": 0.99})
    assert saehd.ema == 0.99 and saehd.loss == "saehd"


def _train(ws: Path, name: str, target: int, options: dict):
    opts = tiny_options(target, preview=False, model_options=dict(options))
    return train(Workspace(ws), recipe("quick96"), name, opts)


def test_a_model_with_the_extras_resumes_exactly_and_merges_with_its_average(train_ws: Path):
    # (Not lr_schedule: its rate follows the run's budget, and the split run stops at a target of 12.)
    extras = EXTRAS | {"lr_schedule": False}
    straight = _train(train_ws, "straight", 24, extras)
    _train(train_ws, "split", 12, extras)
    split = _train(train_ws, "split", 24, {})  # the saved options carry on
    a, b = ModelFolder(straight.folder).load(), ModelFolder(split.folder).load()
    assert a.config["options"] == b.config["options"] == extras
    averaged = [k for k in a.weights if k.startswith(EMA)]
    assert averaged and set(averaged) == set(k for k in b.weights if k.startswith(EMA))
    for k, v in a.weights.items():
        assert torch.allclose(v, b.weights[k], atol=1e-6, rtol=0), k
    # Merge, export and xseg apply load the average; training loads the raw weights.
    net, _ = load_network(ModelFolder(straight.folder))
    loaded = net.state_dict()
    raw = network_weights(a.weights)
    assert set(raw) == set(loaded)
    differ = [k for k in raw if not torch.equal(loaded[k], raw[k])]
    assert differ and all(torch.equal(loaded[k], a.weights[EMA + k]) for k in differ)
    # The average trails the weights: after 24 iterations it is between the start and now.
    key = next(k for k in differ if loaded[k].numel() > 100)
    assert 0 < (loaded[key] - raw[key]).norm() < raw[key].norm()


def test_turning_the_average_on_later_starts_it_at_the_weights_and_off_drops_it(train_ws: Path):
    _train(train_ws, "later", 6, {})
    folder = ModelFolder(_train(train_ws, "later", 7, {"ema": 0.5}).folder)
    ckpt = folder.load()
    assert any(k.startswith(EMA) for k in ckpt.weights)
    _train(train_ws, "later", 8, {"ema": 0.0})
    ckpt = folder.load()
    assert not any(k.startswith(EMA) for k in ckpt.weights)
    net, _ = load_network(folder)
    for k, v in net.state_dict().items():
        assert torch.equal(v, ckpt.weights[k]), k


def test_the_extras_change_training_and_the_learning_rate_follows_the_schedule(train_ws: Path):
    base = _train(train_ws, "base", 10, {})
    detail = _train(train_ws, "detail", 10, {"detail_loss": 1.0})
    sched = _train(train_ws, "sched", 10, {"lr_schedule": True})
    w = {n: ModelFolder(r.folder).load().weights for n, r in (("base", base), ("detail", detail),
                                                              ("sched", sched))}  # fmt: skip
    key = next(k for k, v in w["base"].items() if v.numel() > 100)
    # Same seed, same batches: only the loss or the rate differs, and it shows in the weights.
    assert not torch.equal(w["base"][key], w["detail"][key])
    assert not torch.equal(w["base"][key], w["sched"][key])
    # With the warm-up's rate (at most 10 % of the recipe's over 10 iterations) the weights move less.
    torch.manual_seed(7)  # the initial weights of the same seed (train/setup.py)
    w0 = build_network({"architecture": {"name": "quick96", **TINY}}).state_dict()[key]
    moved = {n: (w[n][key] - w0).norm().item() for n in ("base", "sched")}
    assert moved["sched"] < 0.5 * moved["base"], moved
