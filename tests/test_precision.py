"""`--precision auto` decides from measured times (injected here), keeps the decision in its cache,
and merge's model uses what was decided."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from facelab import precision
from facelab.merge.pipeline import MergeModel
from facelab.models.folder import ModelFolder
from facelab.models.registry import create_model
from facelab.train.recipes import recipe
from facelab.train.setup import new_config, new_state

CPU = torch.device("cpu")
CONFIG = {"name": "quick96", "resolution": 96}


@pytest.fixture(autouse=True)
def cache(tmp_path: Path, monkeypatch) -> Path:
    monkeypatch.setenv(precision.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache" / "facelab" / "precision.json"


def fake(times_ms: dict[str, float]):
    """A timer that reports `times_ms` (by candidate label) and counts its calls."""
    calls: list[str] = []

    def timer(p: str, cl: bool) -> float:
        calls.append(precision.label(p, cl))
        return times_ms[precision.label(p, cl)] / 1000

    return timer, calls


@pytest.mark.parametrize("times, want", [
    ({"fp32": 100, "fp32+channels_last": 90, "bf16": 70, "bf16+channels_last": 60}, ("bf16", True)),
    ({"fp32": 100, "fp32+channels_last": 110, "bf16": 95, "bf16+channels_last": 93}, ("fp32", False)),  # 7 %
    ({"fp32": 100, "fp32+channels_last": 80, "bf16": 2000, "bf16+channels_last": 2100}, ("fp32", True)),
])  # fmt: skip
def test_the_decision_is_the_measured_fastest_and_bf16_must_win_by_ten_percent(times, want, cache: Path):
    timer, calls = fake(times)
    choice = precision.choose("merge", CONFIG, 8, CPU, timer)
    assert (choice.precision, choice.channels_last) == want and not choice.cached
    assert choice.times_ms == pytest.approx(times)
    if times["bf16"] > 10 * times["fp32"]:  # hopeless bf16: a warm-up and one timed call each, no more
        assert calls.count("bf16") == 2 and calls.count("bf16+channels_last") == 2
    assert "measured" in choice.line() and choice.precision in choice.line()
    # The second time it comes from the cache: nothing is timed.
    again_timer, again_calls = fake(times)
    again = precision.choose("merge", CONFIG, 8, CPU, again_timer)
    assert again.cached and not again_calls and (again.precision, again.channels_last) == want
    assert "cached" in again.line()
    entry = next(iter(json.loads(cache.read_text()).values()))
    assert entry["precision"] == want[0] and entry["batch"] == 8 and entry["torch"] == torch.__version__
    assert precision.decisions() == [entry]


def test_another_batch_or_model_is_measured_again():
    times = {"fp32": 10, "fp32+channels_last": 10, "bf16": 5, "bf16+channels_last": 5}
    precision.choose("merge", CONFIG, 8, CPU, fake(times)[0])
    for config, batch in ((CONFIG, 1), ({**CONFIG, "resolution": 128}, 8)):
        timer, calls = fake(times)
        assert not precision.choose("merge", config, batch, CPU, timer).cached and calls
    assert len(precision.decisions()) == 3


def test_without_bf16_only_fp32_is_timed():
    timer, calls = fake({"fp32": 10, "fp32+channels_last": 12})
    choice = precision.choose("merge", CONFIG, 8, CPU, timer, bf16=False)
    assert choice.precision == "fp32" and not any(c.startswith("bf16") for c in calls)
    assert "bf16 is not available" in choice.line()


def test_a_damaged_cache_is_measured_again(cache: Path):
    cache.parent.mkdir(parents=True)
    cache.write_text("{not json")
    timer, calls = fake({"fp32": 10, "fp32+channels_last": 10, "bf16": 5, "bf16+channels_last": 5})
    assert precision.choose("merge", CONFIG, 8, CPU, timer).precision == "bf16" and calls
    assert json.loads(cache.read_text())  # rewritten whole


def test_merge_model_measures_once_and_predicts_in_the_chosen_precision(tmp_path: Path):
    torch.manual_seed(0)
    net = create_model("saehd", resolution=64, archi="df-ud", ae_dims=32, e_dims=16, d_dims=16,
                       d_mask_dims=16)  # fmt: skip
    rec = recipe("saehd")
    folder = ModelFolder.of(tmp_path / "model", "p", rec.class_name)
    folder.save(new_config(rec, net.config, {}), dict(net.state_dict()), {}, new_state(rec.batch, 1), "s\n")
    first = MergeModel(folder, device="cpu")
    choice = first.precision_choice
    assert choice is not None and not choice.cached and set(choice.times_ms) >= {"fp32", "fp32+channels_last"}
    assert (first.precision, first.channels_last) == (choice.precision, choice.channels_last)
    second = MergeModel(folder, device="cpu")
    assert second.precision_choice.cached and second.precision == first.precision
    forced = MergeModel(folder, device="cpu", precision="fp32")
    assert forced.precision_choice is None and forced.precision == "fp32"
    crops = np.random.default_rng(0).random((3, 64, 64, 3), dtype=np.float32)
    tol = 0.05 if first.precision == "bf16" else 1e-5
    for a, b in zip(first.predict(crops), forced.predict(crops), strict=True):
        assert np.abs(a - b).max() < tol


def test_training_measures_without_changing_the_run(train_ws: Path, monkeypatch):
    """Timing the candidates (forward, losses, backward of a batch drawn by position) leaves the
    weights, the optimiser and the draws as they were: `auto` deciding fp32 trains exactly as
    `--precision fp32` does."""
    from facelab.train.trainer import train
    from facelab.workspace import Workspace
    from tests.train_tiny import tiny_options

    monkeypatch.setattr(precision, "CANDIDATES", (("fp32", False), ("bf16", False)))
    monkeypatch.setattr(precision, "MIN_BF16_GAIN", float("inf"))  # bf16 is timed, never chosen
    weights = {}
    for mode in ("auto", "fp32"):
        train(Workspace(train_ws), recipe("quick96"), mode, tiny_options(6, preview=False, precision=mode))
        folder = ModelFolder.of(train_ws / "model", mode, "Quick96")
        weights[mode] = folder.load(optimizer=True)
    entry = precision.decisions()[0]
    assert entry["what"] == "train" and set(entry["times_ms"]) == {"fp32", "bf16"}
    a, b = weights["auto"], weights["fp32"]
    assert a.state["iteration"] == b.state["iteration"] == 6
    for name, t in b.weights.items():
        assert torch.equal(a.weights[name], t), name
    for name, t in b.optimizer.items():
        assert torch.equal(a.optimizer[name], t), name
