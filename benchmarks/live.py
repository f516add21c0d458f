"""`facelab live` speed on this machine: the model alone against the whole pipeline, in one process.

    .venv/bin/python benchmarks/live.py [--amp-resolution 224]

For a Quick96 and an AMP model (DeepFaceLab's default sizes, seeded weights: speed does not depend
on training), each through PyTorch and through its exported .dfm in onnxruntime (plus CUDA where
there is a GPU):
- model alone: ms per face at batch 1 on a real 720p face crop (median of 30 calls), in the
  precision `--precision auto` measured for it (onnxruntime: fp32);
- pipeline: frames/s over shared/media/dst_1.mp4 (720x720) with every frame processed, from
  decoding to the JPEG the browser page is sent, once `auto` has chosen its schedule (the first 36
  frames warm up and time both schedules; `whole_run_fps` counts them too);
- target: output fps / (1000 / model ms) >= 0.8, i.e. the pipeline's overhead beyond the model
  takes <= 25 % of the frame time;
- realtime: the same file played at its 25 fps, with the end-to-end latency (capture to output)
  and the frames dropped.
Prints JSON, then a table; the CPU flags are named beside the absolute times.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from facelab.device import cpu_summary  # noqa: E402
from facelab.dfm.export import export  # noqa: E402
from facelab.dfm.runtime import onnxruntime  # noqa: E402
from facelab.live.outputs import BrowserOutput  # noqa: E402
from facelab.live.session import LiveSession  # noqa: E402
from facelab.live.sources import Source  # noqa: E402
from facelab.live.swapper import Swapper  # noqa: E402
from facelab.merge.pipeline import MergeModel  # noqa: E402
from facelab.models.folder import ModelFolder  # noqa: E402
from facelab.models.registry import create_model  # noqa: E402
from facelab.precision import label  # noqa: E402
from facelab.train.recipes import recipe  # noqa: E402
from facelab.train.setup import new_config, new_state  # noqa: E402

SHARED = REPO.parent / "shared"
VIDEO = SHARED / "media" / "dst_1.mp4"
FACES = SHARED / "dfl-files" / "aligned"  # real aligned faces for the export's check


def make_model(root: Path, kind: str, arch: dict) -> ModelFolder:
    torch.manual_seed(0)
    net = create_model(kind, **arch)
    rec = recipe(kind)
    folder = ModelFolder.of(root, kind, rec.class_name)
    face_type = "f" if kind == "quick96" else "wf"
    folder.save(new_config(rec, net.config, {"face_type": face_type}), dict(net.state_dict()), {},
                new_state(rec.batch, 1), "benchmark\n")  # fmt: skip
    return folder


def model_ms(model: MergeModel, crop: np.ndarray, calls: int = 30) -> float:
    for _ in range(3):
        model.predict(crop)
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        model.predict(crop)
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def real_crop(model: MergeModel) -> np.ndarray:
    """The model's crop of the first dst_1 frame's face, as the live pipeline cuts it."""
    source = Source(str(VIDEO))
    try:
        swapper = Swapper(model, {}, source.fps)
        work = swapper.prepare(source.next())
    finally:
        source.stop()
    return np.stack([work.cut[0]["dst_crop"]])


def pipeline(model: MergeModel, realtime: bool) -> dict:
    source = Source(str(VIDEO), realtime=realtime)
    session = LiveSession(source, Swapper(model, {}, source.fps), [BrowserOutput()])
    stats = session.run()
    return {"fps": stats.processed / stats.seconds, "steady_fps": stats.steady_fps,
            "processed": stats.processed, "dropped": stats.dropped,
            "latency_ms": stats.latency_ms, "schedule": stats.schedule, "probe_fps": stats.probe_fps}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--amp-resolution", type=int, default=224)
    args = ap.parse_args()
    if not VIDEO.is_file() or not FACES.is_dir():
        raise SystemExit(f"needs {VIDEO} and {FACES} (the shared/ folder)")
    tmp = Path(tempfile.mkdtemp(prefix="live-bench-"))
    cpu, flags = cpu_summary()
    ort = onnxruntime()
    cuda_ort = "CUDAExecutionProvider" in ort.get_available_providers()
    rows = []
    for kind, arch in (("quick96", {}), ("amp", {"resolution": args.amp_resolution})):
        folder = make_model(tmp / "model", kind, arch)
        dfm = export(folder, tmp / f"{kind}.dfm", [FACES]).path
        backends = [("torch", folder, "cpu"), ("onnxruntime", dfm, "cpu")]
        if torch.cuda.is_available():
            backends.append(("torch", folder, "cuda"))
        if cuda_ort:
            backends.append(("onnxruntime", dfm, "cuda"))
        for backend, spec, device in backends:
            model = MergeModel(spec, device=device, model_root=tmp / "model", batch=1)  # as live does
            ms = model_ms(model, real_crop(model))
            full = pipeline(model, realtime=False)
            rt = pipeline(model, realtime=True)
            rows.append({"model": kind, "resolution": model.res, "backend": backend, "device": device,
                         "precision": label(model.precision, model.channels_last),
                         "model_ms": round(ms, 2), "model_fps": round(1000 / ms, 2),
                         "pipeline_fps": round(full["steady_fps"], 2),
                         "ratio": round(full["steady_fps"] * ms / 1000, 3),
                         "whole_run_fps": round(full["fps"], 2),
                         "whole_run_ratio": round(full["fps"] * ms / 1000, 3),
                         "schedule": full["schedule"], "probe_fps": full["probe_fps"],
                         "realtime_fps": round(rt["fps"], 2),
                         "realtime_latency_ms": round(rt["latency_ms"], 1),
                         "realtime_dropped": rt["dropped"]})  # fmt: skip
            print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    print(json.dumps({"cpu": cpu, "flags": flags, "threads": torch.get_num_threads(), "gpu": gpu,
                      "video": "dst_1.mp4 720x720 25 fps", "rows": rows}, indent=2))  # fmt: skip
    print(f"\n{cpu} ({', '.join(flags) or 'no avx flags'}), {torch.get_num_threads()} threads"
          + (f", {gpu}" if gpu else ""))  # fmt: skip
    columns = [("model", "model", 8, ""), ("res", "resolution", 4, ""), ("backend", "backend", 12, ""),
               ("dev", "device", 5, ""), ("precision", "precision", 20, ""),
               ("model ms", "model_ms", 9, ".1f"), ("model fps", "model_fps", 9, ".1f"),
               ("pipe fps", "pipeline_fps", 8, ".1f"), ("ratio", "ratio", 6, ".2f"),
               ("schedule", "schedule", 10, ""), ("rt fps", "realtime_fps", 6, ".1f"),
               ("latency ms", "realtime_latency_ms", 10, ".0f"),
               ("dropped", "realtime_dropped", 7, "")]  # fmt: skip
    print(" ".join(f"{h:>{w}}" for h, _, w, _ in columns))
    for r in rows:
        print(" ".join(f"{r[k]:>{w}{spec}}" for _, k, w, spec in columns))

if __name__ == "__main__":
    main()
