"""Multi-process training on torch.distributed (DistributedDataParallel).

Launched by `torchrun --nproc-per-node N -m facelab train ...` or `facelab train --gpus 0,1`
(which runs torchrun for you). Every rank trains the same model on its own share of each
batch: with batch B per rank and N ranks, the run draws N*B samples per iteration and rank r
takes positions r*B .. r*B+B-1 of them. Because every sample's augmentation comes from its
position (see augment.py) and DDP averages the gradients, N ranks at batch B follow the same
path as one process at batch N*B. Only rank 0 writes checkpoints, previews and logs; the other
ranks load the model from what rank 0 saved before the first iteration.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

import torch
import torch.distributed as dist

from facelab.errors import FacelabError, UsageError


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world: int = 1
    local_rank: int = 0
    local_world: int = 1

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world > 1


def from_env() -> Ranks:
    """This process's place in a torchrun launch (a single process when not launched by torchrun)."""
    env = os.environ
    world = int(env.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks()
    local = int(env.get("LOCAL_RANK", "0")), int(env.get("LOCAL_WORLD_SIZE", "1"))
    return Ranks(int(env["RANK"]), world, *local)


def setup(ranks: Ranks, device: torch.device) -> None:
    """Join the process group: NCCL between CUDA GPUs, gloo otherwise (CPU processes)."""
    if not ranks.enabled or dist.is_initialized():
        return
    backend = "nccl" if device.type == "cuda" else "gloo"
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group(backend)


def shutdown() -> None:
    if dist.is_initialized():
        dist.destroy_process_group()


def device_for(ranks: Ranks, choice: str) -> str:
    """Each rank on its own GPU: `auto`/`cuda` become cuda:<local rank> under torchrun."""
    if ranks.enabled and choice in ("auto", "cuda") and torch.cuda.is_available():
        return f"cuda:{ranks.local_rank}"
    return choice


def barrier() -> None:
    if dist.is_initialized():
        dist.barrier()


def agree(values: list[float], device: torch.device) -> list[float]:
    """Sum `values` over all ranks (every rank gets the same list back)."""
    if not dist.is_initialized():
        return values
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def average_gradients(params) -> None:
    """Average the gradients of modules not wrapped in DDP (the GAN and true-face discriminators)."""
    if not dist.is_initialized():
        return
    world = dist.get_world_size()
    for p in params:
        if p.grad is not None:
            dist.all_reduce(p.grad)
            p.grad.div_(world)


def parse_gpus(text: str) -> list[int]:
    """`--gpus 0,1`: check the devices exist, with a message naming what this machine has."""
    try:
        ids = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UsageError(f"--gpus {text}: give GPU numbers separated by commas, e.g. --gpus 0,1") from None
    if not ids or len(set(ids)) != len(ids) or min(ids) < 0:
        raise UsageError(f"--gpus {text}: give distinct GPU numbers separated by commas, e.g. --gpus 0,1")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise FacelabError(
            f"--gpus {text}: PyTorch sees no CUDA GPU on this machine; train without --gpus, or run "
            "several CPU processes with `torchrun --nproc-per-node 2 -m facelab train --device cpu ...`"
        )
    missing = [i for i in ids if i >= count]
    if missing:
        have = "GPU 0" if count == 1 else f"GPUs 0-{count - 1}"
        raise FacelabError(
            f"--gpus {text}: there is no GPU {', '.join(map(str, missing))}; this machine has {have}"
        )
    return ids


def launch(gpus: list[int], argv: list[str]) -> int:
    """Run `argv` (a `facelab train` command line without --gpus) under torchrun, one rank per GPU."""
    env = os.environ | {"CUDA_VISIBLE_DEVICES": ",".join(map(str, gpus))}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={len(gpus)}",
           "-m", "facelab", *argv]  # fmt: skip
    return subprocess.call(cmd, env=env)
