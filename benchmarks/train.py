"""Training speed: Quick96 at batch 4 and 8, SAEHD default (128 px liae-ud) and AMP default (224 px)
at batch 8, fp32 and auto precision, through the real trainer.

    .venv/bin/python benchmarks/train.py [--iters 12]

Faces come from ../shared/media (src_1.mp4 at 10 fps, dst_1.mp4), extracted once into a temp
workspace. Each configuration runs in its own process: 3 warm-up iterations, then --iters
measured ones (resumed, so model building and face loading are not counted), data loading and
augmentation included. Reports ms/iteration, the share of it spent making batches, GFLOP per
iteration (counted by torch.utils.flop_counter over forward + backward), achieved GFLOP/s and
the process's peak memory. With a CUDA GPU it adds SAEHD default at batch 32 and each row's model
FLOPs utilisation against the GPU's dense peak.
Targets (2-core CPU with AMX): Quick96 batch 4 <= 350 ms/iteration in auto precision, < 1.5 GB;
SAEHD default batch 8 <= 1,300 ms/iteration, and within 2x of Quick96's time per GFLOP at the same
precision (the "vs flop-prop." column: 1.0 = exactly FLOP-proportional).
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media"
WARMUP = 3
PEAK_TFLOPS = {"H100": {"bf16": 989.0, "fp32": 67.0}, "H200": {"bf16": 989.0, "fp32": 67.0},
               "A100": {"bf16": 312.0, "fp32": 19.5}}  # fmt: skip


def cli(*args) -> None:
    proc = subprocess.run([sys.executable, "-m", "facelab", *map(str, args)], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(proc.stderr)


def faces_workspace(root: Path) -> Path:
    if not MEDIA.is_dir():
        raise SystemExit(f"needs the real face clips in {MEDIA}")
    for side, fps in (("src", ["--fps", "10"]), ("dst", [])):
        cli("extract-frames", side, "--input", MEDIA / f"{side}_1.mp4", *fps, "-w", root, "-q")
        cli("extract-faces", side, "--size", "256", "--no-debug-images", "-w", root, "-q")
    return root


def train_flops(model, batch: int, res: int, device) -> float:
    """FLOPs of one training step's forward and backward (the losses are negligible)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.rand(batch, 3, res, res, device=device)
    with FlopCounterMode(display=False) as counter:
        out = model(x, x, swap=False)
        sum(v.float().mean() for v in out.values()).backward()
    model.zero_grad(set_to_none=True)
    return counter.get_total_flops()


def one(ws: Path, model: str, batch: int, precision: str, iters: int, arch: dict) -> dict:
    """Runs in a child process: warm up, resume for `iters` iterations, report."""
    import torch

    from facelab import progress
    from facelab.models import create_model
    from facelab.train.recipes import recipe
    from facelab.train.trainer import TrainOptions, train
    from facelab.workspace import Workspace

    progress.set_quiet(True)
    rec = recipe(model)
    name = f"bench-{batch}-{precision}"
    opts = dict(batch=batch, precision=precision, preview=False, seed=0, arch=arch)
    train(Workspace(ws), rec, name, TrainOptions(target_iter=WARMUP, **opts))
    result = train(Workspace(ws), rec, name, TrainOptions(target_iter=WARMUP + iters, **opts))
    device = "cuda" if torch.cuda.is_available() else "cpu"
    net = create_model(rec.model, **arch).to(device)
    flops = train_flops(net, batch, net.config["resolution"], device)
    ms = result.ms_per_iter
    return {
        "model": model, "batch": batch, "precision": precision, "device": device,
        "ms_per_iter": round(ms, 1), "data_share": round(result.data_share, 4),
        "gflop_per_iter": round(flops / 1e9, 1), "achieved_gflops": round(flops / 1e9 / (ms / 1000), 1),
        "peak_mem_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "cuda_peak_mem_mb": round(torch.cuda.max_memory_allocated() / 2**20) if device == "cuda" else None,
    }  # fmt: skip


def child(ws: Path, model: str, batch: int, precision: str, iters: int, arch: dict) -> dict:
    cmd = [sys.executable, __file__, "--child", json.dumps([str(ws), model, batch, precision, iters, arch])]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=12)
    ap.add_argument(
        "--faces",
        help="a workspace with data_src/aligned and data_dst/aligned to use "
        "(default: extract them from ../shared/media)",
    )
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        print(json.dumps(one(Path(json.loads(a.child)[0]), *json.loads(a.child)[1:])))
        return

    import torch

    from facelab.device import has_amx, pick_device, pick_precision

    auto = pick_precision("auto", pick_device("auto"))
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(a.faces) if a.faces else faces_workspace(Path(tmp))
        for batch in (4, 8):
            for precision in ("fp32", "auto"):
                if precision == "auto" and auto == "fp32":
                    rows.append(rows[-1] | {"precision": "auto (= fp32 here)"})
                    continue
                rows.append(child(ws, "quick96", batch, precision, a.iters, {}))
        q96 = rows[-1]  # batch 8, auto precision
        for model in ("saehd", "amp"):
            row = child(ws, model, 8, "auto", a.iters, {})
            row["vs_flop_proportional"] = round(
                (row["ms_per_iter"] / row["gflop_per_iter"]) / (q96["ms_per_iter"] / q96["gflop_per_iter"]), 2
            )
            rows.append(row)
        if torch.cuda.is_available():
            rows.append(child(ws, "saehd", 32, "auto", a.iters, {}))
            name = torch.cuda.get_device_name()
            peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
            for row in rows:
                precision = "fp32" if row["precision"] == "fp32" else auto
                if peak:
                    row["mfu"] = round(row["achieved_gflops"] / 1000 / peak[precision], 4)
    summary = {"amx": has_amx(), "auto_precision": auto, "threads": torch.get_num_threads(), "runs": rows}
    print(json.dumps(summary, indent=1))
    print(f"\n{'model':<30}{'batch':>6}{'precision':>20}{'ms/iter':>10}{'data %':>8}{'GFLOP/it':>10}"
          f"{'GFLOP/s':>9}{'peak MB':>9}{'vs flop-prop.':>14}{'MFU':>8}")  # fmt: skip
    for r in rows:
        print(f"{r['model']:<30}{r['batch']:>6}{r['precision']:>20}{r['ms_per_iter']:>10}"
              f"{r['data_share'] * 100:>8.1f}{r['gflop_per_iter']:>10}{r['achieved_gflops']:>9}"
              f"{r['peak_mem_mb']:>9}{r.get('vs_flop_proportional', ''):>14}"
              f"{r.get('mfu', ''):>8}")  # fmt: skip
    print("targets: quick96 batch 4, auto precision <= 350 ms/iter, < 1500 MB (reference: 1150 ms, 2.3 GB);")
    print("         saehd batch 8 <= 1300 ms/iter and <= 2x flop-proportional (reference: 4485 ms, 5.6 GB)")


if __name__ == "__main__":
    main()
