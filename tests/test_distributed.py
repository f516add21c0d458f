"""Multi-process training (DistributedDataParallel, gloo on CPU) against a single process."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from facelab.errors import FacelabError, UsageError
from facelab.models import create_model
from facelab.train import distributed
from tests.conftest import assert_clean_error, run_cli

# A small LIAE-UD SAEHD with the GAN on (its discriminator is averaged outside DDP) and src flips.
OPTS = ["resolution=64", "archi=liae-ud", "ae_dims=32", "e_dims=16", "d_dims=16", "d_mask_dims=16",
        "gan_power=0.1", "random_src_flip=y"]  # fmt: skip


def _train(ws: Path, name: str, batch: int, target: int, procs: int) -> str:
    # fp32 on both sides: `auto` measures on one process and keeps the rule on several.
    args = ["train", "--model", "saehd", "--name", name, "--batch", str(batch), "--target-iter", str(target),
            "--seed", "5", "--device", "cpu", "--no-preview", "-w", str(ws),
            "--precision", "fp32"]  # fmt: skip
    for o in OPTS:
        args += ["--opt", o]
    launcher = ["-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={procs}"]
    launcher = launcher if procs > 1 else []
    cmd = [sys.executable, *launcher, "-m", "facelab", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout


def _model(ws: Path, name: str) -> tuple[dict, dict]:
    folder = ws / "model" / f"{name}_SAEHD"
    return load_file(folder / "model.safetensors"), json.loads((folder / "state.json").read_text())


def _assert_same(ws: Path, iteration: int) -> None:
    one, one_state = _model(ws, "one")
    two, two_state = _model(ws, "two")
    assert one_state["iteration"] == two_state["iteration"] == iteration
    assert one_state["drawn"] == two_state["drawn"]
    assert one.keys() == two.keys() and any(k.startswith("gan.") for k in one)
    # RMSprop's first steps move every weight by about the learning rate whatever its gradient, so
    # weights with near-zero gradients can differ by a step; compare the whole change instead.
    folder = ws / "model" / "one_SAEHD"
    arch = json.loads((folder / "config.json").read_text())["architecture"]
    torch.manual_seed(5)  # the run's seed: the initial weights, as the trainer builds them
    init = create_model("saehd", **{k: v for k, v in arch.items() if k != "name"}).state_dict()
    moved = sum(float((one[k] - init[k]).pow(2).sum()) for k in init) ** 0.5
    apart = sum(float((one[k] - two[k]).pow(2).sum()) for k in init) ** 0.5
    # Measured: 0.7 % apart; both ranks drawing the same samples instead gives 40 %.
    assert moved > 1e-3 and apart < 0.05 * moved, (apart, moved)
    # The logged losses (each rank's averaged over the ranks) match too.
    logged = [torch.tensor(st["history"]["buckets"], dtype=torch.float64) for st in (one_state, two_state)]
    assert len(logged[0]) == iteration and torch.allclose(logged[0], logged[1], rtol=1e-4)


def test_two_processes_at_batch_b_match_one_at_2b_and_resume(train_ws: Path):
    _train(train_ws, "one", batch=4, target=4, procs=1)
    out = _train(train_ws, "two", batch=2, target=4, procs=2)
    assert out.count("Starting SAEHD 'two'") == 1 and "2 processes" in out  # only rank 0 talks
    _assert_same(train_ws, 4)

    # Resume both: the pair stays together, so the saved counters and weights resume exactly.
    _train(train_ws, "one", batch=4, target=7, procs=1)
    out = _train(train_ws, "two", batch=2, target=7, procs=2)
    assert "Resuming SAEHD 'two' at iteration 4" in out
    _assert_same(train_ws, 7)
    assert not list((train_ws / "model").glob("two_SAEHD/.saving*"))


def test_gpus_flag_checks_the_devices(tmp_path: Path, monkeypatch):
    proc = run_cli("train", "--model", "quick96", "--name", "x", "--gpus", "0,1", "-w", tmp_path)
    assert_clean_error(proc, 1, "--gpus 0,1", "no CUDA GPU")
    proc = run_cli("train", "--model", "quick96", "--name", "x", "--gpus", "a,b", "-w", tmp_path)
    assert_clean_error(proc, 2, "--gpus a,b", "e.g. --gpus 0,1")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert distributed.parse_gpus("1,0") == [1, 0]
    with pytest.raises(FacelabError, match="there is no GPU 3; this machine has GPUs 0-1"):
        distributed.parse_gpus("0,3")
    with pytest.raises(UsageError, match="distinct"):
        distributed.parse_gpus("1,1")
