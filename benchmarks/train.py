"""Training speed against the machine's own limit, through the real trainer.

    .venv/bin/python benchmarks/train.py [--iters 12] [--models quick96,saehd,amp] [--with-load]

First it measures this machine's peak in each precision, in this process, on the threads training
uses: a 2048^3 GEMM and a representative 3x3 convolution (batch 8, 128 -> 128 channels, 64 px, both
memory layouts); the peak of a precision is the faster of the two. Then each configuration trains
in its own process on faces from ../shared/media (src_1.mp4 at 10 fps, dst_1.mp4, extracted once):
3 warm-up iterations (a new model; with `auto`, the precision measurement happens here, in a fresh
cache), then --iters measured ones (resumed, so model building and face loading are not counted),
data loading and augmentation included, then a few more under torch.profiler for the breakdown
(data, forward, loss, backward, optimizer, and the Python between them).

Per row: ms/iteration, GFLOP per iteration (torch.utils.flop_counter over forward + backward),
achieved GFLOP/s, efficiency = achieved / measured peak of the precision it ran in, data share,
the process's peak memory, and for `auto` the choice with its measured speed-up over fp32 and
whether it is within 3 % of the best forced precision. With a CUDA GPU, MFU against the GPU's
dense bf16 peak (table values) is added, and SAEHD at batch 32.

--with-load runs each model's auto row again beside a second, CPU-bound process of one core (a
Python busy loop), for 4x --iters (at least 48) so the thread tuner (facelab/train/threads.py) has
settled, and reports the slowdown factor: the median iteration of the run's second half against
the quiet run's median (target <= 2x), and the thread count it ended on.

Targets (any CPU): Quick96 and SAEHD default >= 75 % of the measured peak; auto never more than
3 % slower than the best forced precision; data share <= 5 %.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media"
WARMUP = 3
PROFILED = 3
PHASES = ("data", "forward", "loss", "backward", "optimizer", "discriminators")
PEAK_TFLOPS = {"H100": {"bf16": 989.0, "fp32": 67.0}, "H200": {"bf16": 989.0, "fp32": 67.0},
               "A100": {"bf16": 312.0, "fp32": 19.5}}  # fmt: skip
BATCH = {"quick96": 4, "saehd": 8, "amp": 8}


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


def _best_seconds(fn, repeats: int = 5) -> float:
    fn()
    fn()  # warm-up: kernel selection, caches
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def measure_peaks(device) -> dict[str, dict[str, float]]:
    """GFLOP/s of a large GEMM and of a 3x3 convolution per precision, and their max as the peak."""
    import torch
    import torch.nn.functional as F

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    out = {}
    gpu = device.type == "cuda"
    batch, channels = (64, 256) if gpu else (8, 128)  # a GPU needs more work per call to be filled
    for precision, dtype in (("fp32", torch.float32), ("bf16", torch.bfloat16)):
        n = 8192 if gpu else 2048
        a, b = torch.rand(n, n, device=device, dtype=dtype), torch.rand(n, n, device=device, dtype=dtype)

        def gemm(a=a, b=b):
            torch.mm(a, b)
            sync()

        gemm_gflops = 2 * n**3 / _best_seconds(gemm) / 1e9
        conv = {}
        for layout in (torch.contiguous_format, torch.channels_last):
            x = torch.rand(batch, channels, 64, 64, device=device, dtype=dtype)
            w = torch.rand(channels, channels, 3, 3, device=device, dtype=dtype)
            x, w = x.contiguous(memory_format=layout), w.contiguous(memory_format=layout)

            def conv3x3(x=x, w=w):
                F.conv2d(x, w, padding=1)
                sync()

            conv[str(layout)] = 2 * batch * channels**2 * 9 * 64 * 64 / _best_seconds(conv3x3) / 1e9
        conv_gflops = max(conv.values())
        out[precision] = {"gemm_gflops": round(gemm_gflops, 1), "conv3x3_gflops": round(conv_gflops, 1),
                          "peak_gflops": round(max(gemm_gflops, conv_gflops), 1)}  # fmt: skip
    return out


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


def phase_breakdown(prof, iterations: int) -> dict[str, float]:
    """ms per iteration of each annotated phase of the trainer's step; `other` is the step's time
    outside them (Python, zero_grad, reading the losses)."""
    totals = {e.key: e.cpu_time_total / 1000 / iterations for e in prof.key_averages() if e.key in PHASES}
    step = next(e.cpu_time_total for e in prof.key_averages() if e.key == "step") / 1000 / iterations
    totals["other"] = max(0.0, step - sum(totals.values()))
    return {k: round(v, 1) for k, v in totals.items()}


def one(ws: str, model: str, batch: int, precision: str, iters: int, profiled: bool = True,
        graph: bool = True) -> dict:  # fmt: skip
    """Runs in a child process: warm up, resume for `iters` iterations, profile a few more, report."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    from facelab import precision as measured
    from facelab import progress
    from facelab.models import create_model
    from facelab.train import trainer
    from facelab.train.recipes import recipe
    from facelab.workspace import Workspace

    progress.set_quiet(True)
    rec, ws = recipe(model), Workspace(Path(ws))
    name = f"bench-{model}-{batch}-{precision}"
    opts = dict(batch=batch, precision=precision, preview=False, seed=0, cuda_graph=graph)
    name += "" if graph else "-eager"
    shutil.rmtree(ws.model_dir / f"{name}_{rec.class_name}", ignore_errors=True)  # an earlier run's
    trainer.train(ws, rec, name, trainer.TrainOptions(target_iter=WARMUP, **opts))
    result = trainer.train(ws, rec, name, trainer.TrainOptions(target_iter=WARMUP + iters, **opts))
    ms = statistics.median(result.step_ms[len(result.step_ms) // 2 :])  # steady state: after any capture
    phases = None
    if profiled:
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            trainer.train(ws, rec, name,
                          trainer.TrainOptions(target_iter=WARMUP + iters + PROFILED, **opts))  # fmt: skip
        phases = phase_breakdown(prof, PROFILED)

    device = "cuda" if torch.cuda.is_available() else "cpu"
    net = create_model(rec.model).to(device)
    flops = train_flops(net, batch, net.config["resolution"], device)
    state = json.loads((ws.model_dir / f"{name}_{rec.class_name}" / "state.json").read_text())
    choice = next((d for d in measured.decisions() if d.get("what") == "train" and d.get("batch") == batch
                   and d.get("model") == net.config.get("name")), None)  # fmt: skip
    return {
        "model": model, "batch": batch, "precision": precision, "ran_in": state["precision"],
        "channels_last": choice["channels_last"] if choice and precision == "auto" else None,
        "measured_ms": choice["times_ms"] if choice and precision == "auto" else None,
        "device": device, "threads": result.threads, "cuda_graph": graph and device == "cuda",
        "replays": result.replays, "mean_ms": round(result.ms_per_iter, 1),
        "ms_per_iter": round(ms, 1), "data_share": round(result.data_share, 4),
        "median_ms": round(statistics.median(result.step_ms), 1),
        "gflop_per_iter": round(flops / 1e9, 1), "achieved_gflops": round(flops / 1e9 / (ms / 1000), 1),
        "phases_ms": phases,
        "peak_mem_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
        "cuda_peak_mem_mb": round(torch.cuda.max_memory_allocated() / 2**20) if device == "cuda" else None,
    }  # fmt: skip


def child(ws: Path, cache: Path, model: str, batch: int, precision: str, iters: int, profiled: bool = True,
          graph: bool = True) -> dict:  # fmt: skip
    args = [str(ws), model, batch, precision, iters, profiled, graph]
    cmd = [sys.executable, __file__, "--child", json.dumps(args)]
    env = os.environ | {"FACELAB_CACHE_DIR": str(cache)}
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode:
        raise SystemExit(proc.stderr[-3000:])
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"{model} batch {batch} {precision}{'' if graph else ' eager'}: {row['ms_per_iter']} ms/iter in "
          f"{row['ran_in']}", file=sys.stderr, flush=True)  # fmt: skip
    return row


def under_load(fn):
    """fn() while a second process keeps one core busy."""
    hog = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(1)
        return fn()
    finally:
        hog.kill()
        hog.wait()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=12)
    ap.add_argument("--models", default="quick96,saehd,amp", help="comma-separated (default: all three)")
    ap.add_argument("--precisions", default="fp32,bf16,auto", help="comma-separated (default: all three)")
    ap.add_argument("--with-load", action="store_true",
                    help="also run each model's auto row beside a CPU-bound process of one core")  # fmt: skip
    ap.add_argument("--faces", help="a workspace with data_src/aligned and data_dst/aligned to use "
                                    "(default: extract them from ../shared/media)")  # fmt: skip
    ap.add_argument("--child", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.with_load and "auto" not in a.precisions.split(","):
        ap.error("--with-load compares with the quiet auto row: keep auto in --precisions")
    if a.child:
        print(json.dumps(one(*json.loads(a.child))))
        return

    import torch

    from facelab.device import cpu_summary, pick_device

    device = pick_device("auto")
    cores = len(os.sched_getaffinity(0))
    torch.set_num_threads(cores)  # as training does
    peaks = measure_peaks(device)
    models = a.models.split(",")
    rows, loaded = [], []
    gpu = device.type == "cuda"
    with tempfile.TemporaryDirectory() as tmp:
        ws = Path(a.faces) if a.faces else faces_workspace(Path(tmp) / "ws")
        cache = Path(tmp) / "cache"
        for model in models:
            group = [child(ws, cache, model, BATCH[model], p, a.iters, profiled=not gpu)
                     for p in a.precisions.split(",")]  # fmt: skip
            forced = [r["ms_per_iter"] for r in group if r["precision"] != "auto"]
            for r in group:
                if r["precision"] == "auto" and forced:
                    r["auto_vs_best_forced"] = round(r["ms_per_iter"] / min(forced), 3)
            rows += group
            quiet = next((r for r in group if r["precision"] == "auto"), None)
            if a.with_load and quiet:
                longer = max(4 * a.iters, 48)
                row = under_load(lambda m=model, n=longer: child(ws, cache, m, BATCH[m], "auto", n, False))
                row["slowdown_under_load"] = round(row["ms_per_iter"] / quiet["median_ms"], 2)
                loaded.append(row)
        if gpu:  # SAEHD at batch 32, and each captured step against the same step run eagerly
            if "saehd" in models:
                rows.append(child(ws, cache, "saehd", 32, "auto", a.iters, False))
            for graphed in [r for r in rows if r["precision"] == "auto"]:
                eager = child(ws, cache, graphed["model"], graphed["batch"], "auto", a.iters, profiled=False,
                              graph=False)  # fmt: skip
                graphed["graph_speedup"] = round(eager["ms_per_iter"] / graphed["ms_per_iter"], 2)
                rows.append(eager)
    for row in rows + loaded:
        peak = peaks[row["ran_in"]]["peak_gflops"]
        row["efficiency"] = round(row["achieved_gflops"] / peak, 3)
        if gpu:  # against the datasheet's dense bf16 peak, and against the bf16 GEMM measured here
            table = next((v for k, v in PEAK_TFLOPS.items() if k in torch.cuda.get_device_name()), None)
            row["mfu"] = round(row["achieved_gflops"] / 1000 / table["bf16"], 4) if table else None
            row["mfu_measured_peak"] = round(row["achieved_gflops"] / peaks["bf16"]["gemm_gflops"], 4)
    cpu, flags = cpu_summary()
    summary = {"cpu": cpu, "flags": [f for f in flags if f.startswith(("avx", "amx"))], "threads": cores,
               "torch": torch.__version__, "device": str(device), "peaks": peaks, "runs": rows,
               "under_load": loaded}  # fmt: skip
    print(json.dumps(summary, indent=1))
    print_table(summary)


def print_table(s: dict) -> None:
    print(f"\n{s['cpu']} ({' '.join(s['flags'])}), {s['threads']} threads, torch {s['torch']}")
    for p, v in s["peaks"].items():
        print(f"  measured peak {p}: GEMM {v['gemm_gflops']} GFLOP/s, 3x3 conv {v['conv3x3_gflops']} GFLOP/s")
    gpu = s["device"].startswith("cuda")
    extra = f"{'graph':>7}{'x eager':>9}{'MFU':>7}{'vs best':>9}" if gpu else f"{'vs best':>9}{'load x':>8}"
    print(f"\n{'model':<9}{'batch':>6}{'precision':>11}{'ran in':>16}{'ms/iter':>9}{'GFLOP/s':>9}"
          f"{'eff.':>7}{'data %':>8}{'peak MB':>9}{extra}")  # fmt: skip
    for r in s["runs"] + s["under_load"]:
        ran = r["ran_in"] + ("+cl" if r.get("channels_last") else "")
        if gpu:
            extra = (f"{'yes' if r['replays'] else 'no':>7}{r.get('graph_speedup', ''):>9}"
                     f"{r['mfu'] or 0:>7.1%}{r.get('auto_vs_best_forced', ''):>9}")  # fmt: skip
        else:
            extra = f"{r.get('auto_vs_best_forced', ''):>9}{r.get('slowdown_under_load', ''):>8}"
        memory = r["cuda_peak_mem_mb"] if gpu else r["peak_mem_mb"]
        print(f"{r['model']:<9}{r['batch']:>6}{r['precision']:>11}{ran:>16}{r['ms_per_iter']:>9}"
              f"{r['achieved_gflops']:>9}{r['efficiency']:>7.0%}{r['data_share'] * 100:>8.1f}"
              f"{memory:>9}{extra}")  # fmt: skip
    for r in s["under_load"]:
        print(f"  {r['model']} beside a one-core load: {r['ms_per_iter']} ms (the second half's "
              f"median), ended on {r['threads']} of {s['threads']} threads")
    print("\nwhere an iteration goes (ms, profiled):" if not gpu else "")
    for r in [r for r in s["runs"] if r["phases_ms"]]:
        print(f"  {r['model']} {r['precision']}: " + ", ".join(f"{k} {v}" for k, v in r["phases_ms"].items()))
    if gpu:
        print("ms/iter: the median of the second half (a captured row's iterations there are all replays); "
              "MFU: against the datasheet's dense bf16 peak. Targets: SAEHD batch 8 >= 15 %, 32 >= 30 %")
    else:
        print("targets: efficiency >= 75 %; auto within 3 % of the best forced; data <= 5 %; load x <= 2")


if __name__ == "__main__":
    main()
