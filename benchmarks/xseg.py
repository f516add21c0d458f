"""XSeg speed and quality on this machine.

    .venv/bin/python benchmarks/xseg.py [--iterations 300] [--resolution 64] [--base-ch 8]

Speed, with DeepFaceLab's size (256 px, base 32, batch 2 per side) and with the small size given:
ms per training iteration and faces per second applied. Quality, with the small size: 30 real dst
faces (shared/media/dst_1.mp4) carry a pasted hand or microphone and labels saying so (tests/
occluders.py); XSeg trains for --iterations with facelab's XSeg recipe, is applied to 20 other
faces with other occluders, and its mask is compared with the truth (face hull minus occluder),
beside the landmark hull's IoU on the same faces. Prints JSON, then a table; the CPU flags are
named beside the absolute times.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from facelab.device import cpu_summary  # noqa: E402
from facelab.models.folder import ModelFolder  # noqa: E402
from facelab.train.recipes import RECIPES  # noqa: E402
from facelab.train.trainer import TrainOptions, train  # noqa: E402
from facelab.workspace import Workspace  # noqa: E402
from facelab.xseg.apply import XSegPredictor, apply_masks  # noqa: E402
from tests.occluders import make_set, score, textures  # noqa: E402

MEDIA = REPO.parent / "shared" / "media"


def faces(tmp: Path) -> list[Path]:
    for args in (["extract-frames", "dst", "--input", MEDIA / "dst_1.mp4"],
                 ["extract-faces", "dst", "--size", "256", "--no-debug-images"]):  # fmt: skip
        cmd = [sys.executable, "-m", "facelab", *map(str, args), "-w", str(tmp / "src"), "-q"]
        subprocess.run(cmd, check=True)
    return sorted((tmp / "src" / "data_dst" / "aligned").glob("*.jpg"))


def run(ws: Path, name: str, res: int, base: int, iterations: int) -> tuple[float, ModelFolder]:
    opts = TrainOptions(target_iter=iterations, arch={"resolution": res, "base_ch": base},
                        model_options={"resolution": res}, seed=1, preview=False,
                        status_every_s=3600)  # fmt: skip
    result = train(Workspace(ws), RECIPES["xseg"], name, opts)
    return result.ms_per_iter, ModelFolder(result.folder)


def apply_rate(ws: Path, folder: ModelFolder) -> float:
    t = time.perf_counter()
    done = apply_masks(ws / "data_src" / "aligned", XSegPredictor(folder, "cpu"))
    return done.masked / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iterations", type=int, default=300)
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--base-ch", type=int, default=8)
    args = ap.parse_args()
    if not MEDIA.is_dir():
        raise SystemExit(f"needs the real faces in {MEDIA}")
    tmp = Path(tempfile.mkdtemp(prefix="xseg-bench-"))
    found = faces(tmp)
    tex = textures(MEDIA, 256)
    make_set(found[0:120:4], tex, tmp / "ws" / "data_dst" / "aligned", labelled=30, seed=1)
    truth = make_set(found[2:120:6][:20], tex, tmp / "ws" / "data_src" / "aligned", labelled=0, seed=2)
    ws = tmp / "ws"

    full_ms, full = run(ws, "full", 256, 32, 6)
    full_rate = apply_rate(ws, full)
    small_ms, small = run(ws, "small", args.resolution, args.base_ch, args.iterations)
    small_rate = apply_rate(ws, small)
    ious, hulls = score(truth)
    result = {"cpu": " ".join([cpu_summary()[0], *cpu_summary()[1]]), "train_ms_256_base32": round(full_ms),
              "apply_faces_s_256": round(full_rate, 2),
              f"train_ms_{args.resolution}_base{args.base_ch}": round(small_ms),
              f"apply_faces_s_{args.resolution}": round(small_rate, 2), "iterations": args.iterations,
              "iou_xseg": round(float(np.mean(ious)), 3), "iou_xseg_min": round(float(np.min(ious)), 3),
              "iou_hull": round(float(np.mean(hulls)), 3)}  # fmt: skip
    print(json.dumps(result))
    print(f"\nCPU: {result['cpu']}")
    print(f"{'size':<22}{'train ms/iter':>14}{'apply faces/s':>15}")
    print(f"{'256 px, base 32':<22}{full_ms:>14.0f}{full_rate:>15.2f}")
    print(f"{f'{args.resolution} px, base {args.base_ch}':<22}{small_ms:>14.0f}{small_rate:>15.2f}")
    print(f"IoU after {args.iterations} iterations: XSeg {result['iou_xseg']} "
          f"(worst {result['iou_xseg_min']}), landmark hull {result['iou_hull']}")


if __name__ == "__main__":
    main()
