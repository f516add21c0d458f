"""DeepFaceLab import and export of a full-size model, through the CLI.

    .venv/bin/python benchmarks/dfl_import.py [--resolution 256] [--archi liae-ud]

Builds a SAEHD with our own create_model at the given size (default 256 px liae-ud, DFL's other
defaults: ae 256, e/d 64, mask 22) with random AdaBelief state, writes it as a facelab model
folder, exports it to DeepFaceLab's files with `facelab export-dfl`, and imports those back with
`facelab import-dfl`. Prints JSON and a table: wall time and peak memory (max RSS) of each command,
the files' size, and whether every tensor came back equal. The CPU and its flags are printed
beside the times, which are absolute.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from facelab.device import cpu_summary
from facelab.models.folder import ModelFolder
from facelab.models.registry import create_model
from facelab.train import model_options
from facelab.train.optim import AdaBelief
from facelab.train.recipes import recipe, with_options
from facelab.train.setup import new_config, new_state

_MEASURE = ("import resource, subprocess, sys\n"
            "code = subprocess.run(sys.argv[1:]).returncode\n"
            "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, file=sys.stderr)\n"
            "sys.exit(code)")  # the peak of this one command alone


def timed(*args) -> tuple[float, float]:
    """(seconds, peak RSS in MB) of one facelab command in a child process."""
    t = time.perf_counter()
    cmd = [sys.executable, "-c", _MEASURE, sys.executable, "-m", "facelab", *map(str, args)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t
    if proc.returncode:
        raise SystemExit(proc.stderr)
    return seconds, int(proc.stderr.strip().splitlines()[-1]) / 1024


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--resolution", type=int, default=256)
    ap.add_argument("--archi", default="liae-ud")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="dfl-bench-"))
    arch = {"resolution": args.resolution, "archi": args.archi, "ae_dims": 256, "e_dims": 64, "d_dims": 64,
            "d_mask_dims": 22}  # fmt: skip
    torch.manual_seed(0)
    net = create_model("saehd", **arch)
    options = {n: o.default for n, o in model_options.specs("saehd").items()} | arch
    rec = with_options(recipe("saehd"), options)
    opt = AdaBelief(list(net.named_parameters()), lr=5e-5)
    state = {k: torch.rand_like(v) for k, v in opt.state_tensors().items()}
    folder = ModelFolder.of(tmp / "a" / "model", "big", "SAEHD")
    folder.save(new_config(rec, net.config, options), net.state_dict(), state, new_state(rec.batch, 100000),
                "benchmark\n")  # fmt: skip
    params = sum(p.numel() for p in net.parameters())
    del net, opt, state

    export_s, export_mb = timed("export-dfl", "big", "-w", tmp / "a", "--out", tmp / "dfl", "-q")
    dfl_bytes = sum(p.stat().st_size for p in (tmp / "dfl").iterdir())
    import_s, import_mb = timed("import-dfl", tmp / "dfl", "-w", tmp / "b", "-q")
    a, b = folder.load(), ModelFolder.of(tmp / "b" / "model", "big", "SAEHD").load()
    equal = all(torch.equal(v, b.weights[k]) for k, v in a.weights.items()) and all(
        torch.equal(v, b.optimizer[k]) for k, v in a.optimizer.items())
    result = {"model": f"SAEHD {args.archi} {args.resolution} px", "parameters_M": round(params / 1e6, 1),
              "dfl_files_MB": round(dfl_bytes / 1e6, 1), "export_s": round(export_s, 2),
              "export_peak_MB": round(export_mb), "import_s": round(import_s, 2),
              "import_peak_MB": round(import_mb), "round_trip_equal": equal,
              "cpu": " ".join([cpu_summary()[0], *cpu_summary()[1]])}  # fmt: skip
    print(json.dumps(result))
    print(f"\n{'step':<8}{'seconds':>9}{'peak MB':>9}   ({result['model']}, {result['parameters_M']} M "
          f"parameters, {result['dfl_files_MB']} MB of DFL files; CPU: {result['cpu']})")
    print(f"{'export':<8}{export_s:>9.2f}{export_mb:>9.0f}")
    print(f"{'import':<8}{import_s:>9.2f}{import_mb:>9.0f}")
    print(f"round trip equal: {equal}")


if __name__ == "__main__":
    main()
