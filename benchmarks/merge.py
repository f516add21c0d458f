"""Merge speed: `facelab merge` on dst_1.mp4 (720x720, 125 frames) with a Quick96 model.

    .venv/bin/python benchmarks/merge.py

A Quick96 model is trained for 2 iterations (speed does not depend on training), then
`facelab merge` runs in a fresh process: frames/s end to end (wall clock, including Python
start-up and the model load) and once merging (the command's own figure). Also the model's
share: one batch-8 prediction timed on its own.
Target (2-core machine): at least 20 frames/s end to end (the reference: 5.7, 10.9 once merging).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from train import cli, faces_workspace


def main() -> None:
    import numpy as np

    from facelab.merge.pipeline import MergeModel
    from facelab.models.folder import ModelFolder

    with tempfile.TemporaryDirectory() as tmp:
        ws = faces_workspace(Path(tmp))
        cli(
            "train",
            "--model",
            "quick96",
            "--name",
            "bench",
            "--target-iter",
            "2",
            "--no-preview",
            "-w",
            ws,
            "-q",
        )
        t0 = time.perf_counter()
        proc = subprocess.run([sys.executable, "-m", "facelab", "merge", "-w", str(ws), "-q"],
                              capture_output=True, text=True)  # fmt: skip
        wall = time.perf_counter() - t0
        if proc.returncode:
            raise SystemExit(proc.stderr)
        frames = int(re.search(r"merged (\d+) frames", proc.stdout).group(1))
        merging = float(re.search(r"\(([\d.]+) frames/s\)", proc.stdout).group(1))
        model = MergeModel(ModelFolder.of(ws / "model", "bench", "Quick96"))
        crops = np.random.default_rng(0).random((8, 96, 96, 3), dtype=np.float32)
        model.predict(crops)
        t1 = time.perf_counter()
        for _ in range(3):
            model.predict(crops)
        per_face = (time.perf_counter() - t1) / 24 * 1000
    result = {"frames": frames, "end_to_end_fps": round(frames / wall, 2), "merging_fps": merging,
              "seconds": round(wall, 1), "model_ms_per_face": round(per_face, 1),
              "model_bound_fps": round(1000 / per_face, 1)}  # fmt: skip
    print(json.dumps(result, indent=1))
    print(f"\n{'frames':>7}{'end-to-end fps':>16}{'merging fps':>13}{'model ms/face':>15}")
    print(f"{frames:>7}{result['end_to_end_fps']:>16}{merging:>13}{result['model_ms_per_face']:>15}")
    print("target: >= 20 frames/s end to end (reference tool: 5.7 end to end, 10.9 merging)")


if __name__ == "__main__":
    main()
