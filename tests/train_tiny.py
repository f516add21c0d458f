"""Train a tiny seeded Quick96-layout model through the real trainer (a child process for tests).

usage: python tests/train_tiny.py WORKSPACE NAME TARGET_ITER [SAVE_EVERY_MIN] [BACKUP_EVERY_HOURS]
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

from facelab.train.recipes import recipe
from facelab.train.trainer import TrainOptions, train
from facelab.workspace import Workspace

TINY = {"resolution": 64, "ae_dims": 32, "e_dims": 16, "d_dims": 16, "d_mask_dims": 16}


def tiny_options(target_iter: int, **kw) -> TrainOptions:
    """A fixed thread count: the tuner (train/threads.py) would change the summation order under a
    competing load, and the tests compare runs exactly."""
    kw.setdefault("threads", len(os.sched_getaffinity(0)))
    return TrainOptions(target_iter=target_iter, arch=dict(TINY), seed=kw.pop("seed", 7), **kw)


if __name__ == "__main__":
    ws, name, target = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
    save_every = float(sys.argv[4]) if len(sys.argv) > 4 else 25.0
    backup_every = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
    opts = tiny_options(target, save_every_min=save_every, autobackup_hour=backup_every, status_every_s=0)
    result = train(Workspace(ws), recipe("quick96"), name, opts)
    print(f"done at iteration {result.iteration}", flush=True)
