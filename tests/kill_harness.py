"""SIGKILL a step at random moments and check that it always recovers.

    python tests/kill_harness.py WORKSPACE --runs 200                 # training (the default step)
    python tests/kill_harness.py WORK --step merge --runs 200         # any other long step

Training: kills half of them inside a save, and checks every time that the model folder loads
(after the recovery the trainer itself runs) and resumes; WORKSPACE needs data_src/aligned and
data_dst/aligned. Every other step (kill_steps.STEPS: extract-frames, extract-faces, sort, merge,
make-video, run, import-dfl, convert-dfl, xseg-apply, export) is killed in rounds of 5 and then
finished, and its outputs are compared with an uninterrupted run's, until N kills have interrupted the
running step (a kill that finds it finished counts for nothing and ends its round); WORK is a folder
for its inputs (built once from ../shared) and workspaces. Prints a JSON summary; exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from kill_steps import STEPS, kill_rounds  # noqa: E402
from train_tiny import TINY  # noqa: E402

from facelab.models import create_model  # noqa: E402
from facelab.models.folder import COMMIT, STAGING, ModelFolder  # noqa: E402

CLASS = "Quick96"


def _start(ws: Path, name: str) -> subprocess.Popen:
    # save_every 0: a save after every iteration, so saves take a large share of the run.
    cmd = [sys.executable, str(HERE / "train_tiny.py"), str(ws), name, str(10**9), "0"]
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait_started(proc: subprocess.Popen, timeout: float = 120.0) -> str:
    deadline = time.time() + timeout
    seen = []
    while time.time() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        if line.startswith(("Starting", "Resuming")):
            return line.strip()
        seen.append(line)
    raise RuntimeError(f"the trainer did not start (exit {proc.poll()}): {''.join(seen[-5:])}")


def _check(folder: ModelFolder) -> int:
    """Recover and load like the trainer does; the iteration the model is at (0 = nothing saved yet)."""
    if not folder.exists():
        return 0
    with folder.lock():
        folder.recover()
        ckpt = folder.load()
    model = create_model("quick96", **TINY)
    model.load_state_dict(ckpt.weights)
    history_iters = sum(1 for _ in ckpt.state["history"]["buckets"]) + ckpt.state["history"]["pending_count"]
    if history_iters != ckpt.state["iteration"]:
        raise RuntimeError(
            f"loss history has {history_iters} iterations, state says {ckpt.state['iteration']}"
        )
    return int(ckpt.state["iteration"])


def kill_cycles(ws: Path, runs: int, seed: int = 0, name: str = "killed") -> dict:
    rng = random.Random(seed)
    folder = ModelFolder.of(ws / "model", name, CLASS)
    stats = {"runs": runs, "mid_save": 0, "loaded": 0, "resumed": 0, "failures": [], "iterations": []}
    iteration = 0
    for i in range(runs):
        proc = _start(ws, name)
        started = _wait_started(proc)
        if iteration and f"at iteration {iteration}:" in started:
            stats["resumed"] += 1
        if i % 2:  # wait for a save to begin, then kill somewhere inside it
            deadline = time.time() + 30
            while not ((folder.path / STAGING).exists() or (folder.path / COMMIT).exists()):
                if time.time() > deadline:
                    break
                time.sleep(0.0005)
            time.sleep(rng.uniform(0, 0.03))
        else:
            time.sleep(rng.uniform(0, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        if (folder.path / STAGING).exists() or (folder.path / COMMIT).exists():
            stats["mid_save"] += 1
        try:
            now = _check(folder)
        except Exception as exc:  # noqa: BLE001 - every failure is reported, not raised
            stats["failures"].append(f"run {i}: {type(exc).__name__}: {exc}")
            break
        if now < iteration:
            stats["failures"].append(f"run {i}: went back from iteration {iteration} to {now}")
        stats["loaded"] += 1
        iteration = now
        stats["iterations"].append(now)
    stats["final_iteration"] = iteration
    return stats


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("workspace", type=Path)
    ap.add_argument("--step", default="train", choices=["train", *STEPS])
    ap.add_argument("--runs", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    t0 = time.time()
    if a.step == "train":
        result = kill_cycles(a.workspace, a.runs, a.seed)
        result.pop("iterations")
    else:
        result = kill_rounds(a.step, a.workspace, a.runs, a.seed, running=True)
    result["seconds"] = round(time.time() - t0, 1)
    print(json.dumps(result, indent=1))
    sys.exit(1 if result["failures"] else 0)
