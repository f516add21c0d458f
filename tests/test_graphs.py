"""The GPU's captured training step and the side-stream prefetch (facelab/train/graphs.py).

The prefetch's bookkeeping and the optimiser's device-tensor inputs run on the CPU too, and are
tested here in CI. Capture and replay need a CUDA GPU: those tests skip without one and run on a
GPU machine (FACELAB_FACES_WS names a workspace with aligned faces where ../shared is absent).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from facelab.models.folder import ModelFolder
from facelab.train import graphs
from facelab.train.optim import OPTIMIZERS
from facelab.train.recipes import recipe
from facelab.train.trainer import TrainingRun, TrainOptions
from facelab.workspace import Workspace
from tests.train_tiny import TINY

CUDA = torch.cuda.is_available()
needs_cuda = pytest.mark.skipif(not CUDA, reason="CUDA graphs need a CUDA GPU")


@pytest.fixture
def faces(request, tmp_path: Path) -> Path:
    """A private copy of a workspace's aligned faces: FACELAB_FACES_WS, else the real clips'."""
    given = os.environ.get("FACELAB_FACES_WS")
    source = Path(given) if given else request.getfixturevalue("faces_ws")
    ws = tmp_path / "ws"
    for side in ("src", "dst"):
        shutil.copytree(source / f"data_{side}" / "aligned", ws / f"data_{side}" / "aligned")
    return ws


@pytest.mark.parametrize("kind", sorted(OPTIMIZERS))
def test_a_device_tensor_learning_rate_and_given_keep_masks_update_as_the_float_ones(kind):
    """A captured step reads the learning rate from a tensor and the keep masks from a buffer it
    fills: the update is the same as with the float and the optimiser's own masks."""
    def make():
        g = torch.Generator().manual_seed(0)
        params = [torch.nn.Parameter(torch.randn(s, generator=g)) for s in ((32, 16, 3, 3), (300,))]
        return params, OPTIMIZERS[kind]([(f"p{i}", p) for i, p in enumerate(params)], lr=0.01,
                                        lr_dropout=0.3, seed=5)  # fmt: skip

    (a, opt_a), (b, opt_b) = make(), make()
    buffer = torch.empty(sum(p.numel() for p in b), dtype=torch.bool)
    lr = torch.zeros(())
    g = torch.Generator().manual_seed(1)
    for step in range(4):
        for pa, pb in zip(a, b, strict=True):
            pa.grad = torch.randn(pa.shape, generator=g)
            pb.grad = pa.grad.clone()
        opt_a.step(step, 0.01 * (step + 1), foreach=True)
        keeps = opt_b.dropout.masks(step, into=buffer)
        opt_b.step(step, lr.fill_(0.01 * (step + 1)), foreach=True, keeps=keeps)
    for pa, pb in zip(a, b, strict=True):
        assert torch.equal(pa, pb)
    assert not torch.equal(a[0], make()[0][0])


def _opts(model: str, **kw) -> TrainOptions:
    """A tiny seeded model of each kind, in float32 (the comparisons are exact on the CPU)."""
    small = {"resolution": 64, "ae_dims": 32, "e_dims": 16, "d_dims": 16, "d_mask_dims": 16, "batch_size": 2}
    options = {"saehd": small | {"clipgrad": True}, "amp": small | {"inter_dims": 64, "face_type": "f"}}
    return TrainOptions(arch=dict(TINY) if model == "quick96" else {}, model_options=options.get(model, {}),
                        seed=3, preview=False, precision="fp32", threads=2, **kw)  # fmt: skip


def _run(ws: Path, name: str, model: str = "quick96", **kw) -> TrainingRun:
    folder = ModelFolder.of(Workspace(ws).model_dir, name, recipe(model).class_name)
    return TrainingRun(Workspace(ws), recipe(model), folder, _opts(model, **kw))


def test_prefetched_batches_are_the_ones_the_loop_would_draw(faces: Path):
    """Drawn ahead for the next iteration, taken only while the counters are the ones they were
    drawn from; the counters advance when they are taken, so a save in between holds the
    counters of the iteration to come."""
    plain, ahead = _run(faces, "a"), _run(faces, "b")
    pre = graphs.Prefetcher(ahead)
    for _ in range(7):  # Quick96 repeats every third batch unwarped: both kinds of batch are met
        expected = plain.next_batches()
        before = dict(ahead.drawn)
        pre.prefetch()
        assert ahead.drawn == before  # drawing ahead changes nothing of the run's state
        got = pre.next_batches()
        assert ahead.drawn == plain.drawn and ahead.last_batch == plain.last_batch
        for side in expected:
            for e, g in zip(expected[side], got[side], strict=True):
                assert torch.equal(e, g)
        plain.iteration += 1
        ahead.iteration += 1
    assert pre.used == 7
    pre.prefetch()
    ahead.drawn = {s: n + 100 for s, n in ahead.drawn.items()}  # e.g. a resumed run's counters
    plain.drawn = dict(ahead.drawn)
    got, expected = pre.next_batches(), plain.next_batches()
    assert pre.used == 7 and torch.equal(got["src"][0], expected["src"][0])


@pytest.mark.parametrize("model", ["quick96", "saehd", "amp"])
def test_a_run_without_a_gpu_is_not_captured(faces: Path, model: str):
    run = _run(faces, model, model, device="cpu")
    assert run.captured is None and graphs.unsupported(run) == "not on a CUDA GPU"


# ---------------------------------------------------------------- on a CUDA GPU


def _steps(run: TrainingRun, iters: int) -> list[list[float]]:
    """`iters` iterations as the training loop runs them on a GPU: batches drawn ahead on a side
    stream while the step runs."""
    pre, losses = graphs.Prefetcher(run), []
    for _ in range(iters):
        now = run.launch_step(pre.next_batches())
        pre.prefetch()
        losses.append([v.item() for v in now])
    return losses


def deterministic(monkeypatch) -> None:
    """The same kernels for both runs, without TF32: RMSprop's first steps move every weight by
    about lr whatever its gradient's size, so a gradient near zero whose sign rounding flips
    would otherwise count as a difference."""
    for flags, name, value in ((torch.backends.cudnn, "benchmark", False),
                               (torch.backends.cudnn, "deterministic", True),
                               (torch.backends.cudnn, "allow_tf32", False),
                               (torch.backends.cuda.matmul, "allow_tf32", False)):  # fmt: skip
        monkeypatch.setattr(flags, name, value)


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).norm() / b.float().norm().clamp_min(1e-12))


@needs_cuda
@pytest.mark.parametrize("model", ["quick96", "saehd", "amp"])
def test_the_captured_step_trains_as_the_eager_one(faces: Path, model: str, monkeypatch):
    """Same seed, same batches: eager and captured (with the side-stream prefetch) give the same
    losses, weight updates and optimiser state, within float rounding (cuDNN may take other
    kernels inside a graph, so not bit for bit); every iteration after the warm-up is a replay.
    Quick96 has learning-rate dropout, SAEHD gradient clipping here, AMP its channel mix: each is
    read by the graph from what is filled in before every replay."""
    iters, out = graphs.WARMUP + 1 + 8, {}
    for graphed in (False, True):
        run = _run(faces, f"{model}-{graphed}", model, device="cuda", cuda_graph=graphed)
        assert (run.captured is not None) == graphed
        deterministic(monkeypatch)
        start = {k: v.clone() for k, v in run.model.state_dict().items()}
        losses = _steps(run, iters)
        moved = {k: v - start[k] for k, v in run.model.state_dict().items()}
        out[graphed] = (losses, moved, run.opt.state_tensors(), run)
    (eager_losses, eager_moved, eager_state, _), (losses, moved, state, run) = out[False], out[True]
    assert run.captured.replays == iters - graphs.WARMUP
    assert torch.allclose(torch.tensor(losses), torch.tensor(eager_losses), rtol=1e-4)
    for key, change in eager_moved.items():
        if change.norm() > 0:
            assert _relative(moved[key], change) < 1e-3, key
    for key, s in eager_state.items():
        assert _relative(state[key], s) < 1e-3, key


@needs_cuda
def test_replays_read_the_keep_masks_of_their_own_iteration(faces: Path):
    """Quick96's learning-rate dropout: before each replay, the buffer the graph reads holds that
    iteration's slice of the keep pool."""
    run = _run(faces, "q", device="cuda")
    _steps(run, graphs.WARMUP + 3)
    assert run.captured.replays == 3
    expected = run.opt.dropout.masks(run.iteration - 1)
    assert torch.equal(torch.cat([m.reshape(-1) for m in expected]), run.captured.keep)
