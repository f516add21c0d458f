"""Swap quality at an equal training budget: the issue-19 table for src_1 -> dst_1 and src_2 -> dst_2.

    .venv/bin/python benchmarks/quality.py --work /tmp/quality [--minutes 20 | --budget-iterations N]
                                           [--pairs 1 2] [--variants today,+png,...,new]
                                           [--training base,ema,detail,schedule]

Per pair, `facelab run` trains a Quick96 for the budget (once: a rerun with the same work folder
reuses the model and its aligned faces). Then each variant (VARIANTS: today's pipeline, then one
change at a time, then every new default) extracts the dst frames in its format, merges the same
model's faces with its settings, encodes the result and scores it with `facelab eval`. Each training
variant (TRAINING: facelab's training extras, one at a time) trains one more Quick96 from the same
faces for the same budget, and is merged and scored with the new defaults ("base" is the run's model
itself). The budget in minutes depends on the machine (its CPU flags are printed: run it on a quiet
machine, as every model must get the same share of it); `--budget-iterations` compares machines,
and each model's ms/iteration shows what an extra costs. Prints JSON, then the table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from facelab.device import cpu_summary  # noqa: E402
from facelab.merge.settings import validate  # noqa: E402
from facelab.models.folder import STATE, ModelFolder  # noqa: E402

MEDIA = REPO.parent / "shared" / "media"
# What each variant changes: dst frame format, the result's colour matrix (make-video --colour) and
# merge settings. "today" is facelab before issue 19; each next row adds one change; "new" is every
# default of today's code (rct's range bound is in every row: it is not an option); the rows after it
# are options tried on top of the defaults.
TODAY = {"stabilise": 0, "restore_detail": 0}
VARIANTS = {
    "today": {"frames": "jpg", "colour": "bt709", "merge": TODAY},
    "+png": {"frames": "png", "colour": "bt709", "merge": TODAY},
    "+colour": {"frames": "png", "colour": "dst", "merge": TODAY},
    "+steady": {"frames": "png", "colour": "dst", "merge": TODAY | {"stabilise": 3}},
    "+detail50": {"frames": "png", "colour": "dst", "merge": TODAY | {"stabilise": 3, "restore_detail": 50}},
    "+detail": {"frames": "png", "colour": "dst", "merge": TODAY | {"stabilise": 3, "restore_detail": 100}},
    "inward": {"frames": "png", "colour": "dst", "merge": {"feather": "inward"}},
    "new": {"frames": "png", "colour": "dst", "merge": {}},
    "+temporal": {"frames": "png", "colour": "dst", "merge": {"temporal": 50}},
}
# Training variants: model options (train/model_options.EXTRAS) of a Quick96 trained beside the run's.
TRAINING = {"base": {}, "ema": {"ema": 0.999}, "detail": {"detail_loss": 1.0},
            "schedule": {"lr_schedule": True}}  # fmt: skip
DEFAULTS = validate({})
# (summary key, column title, format); the targets of issue 19 in the last column of the table.
COLUMNS = [("swapped", "swap", "{:.2f}"), ("src_distance", "identity", "{:.3f}"), ("nme", "NME", "{:.3f}"),
           ("jitter", "jitter", "{:.4f}"), ("flicker", "flicker", "{:.2f}"),
           ("background_psnr", "bg PSNR", "{:.1f}"), ("sharpness", "sharp", "{:.2f}"),
           ("seam", "seam", "{:.2f}"), ("delta_e", "dE", "{:.1f}")]  # fmt: skip
TARGETS = {"swapped": "1.00", "src_distance": "no worse", "nme": "no worse", "jitter": "<= 0.015",
           "background_psnr": ">= 45", "sharpness": ">= 0.7", "seam": "<= 1.15",
           "delta_e": "<= 6"}  # fmt: skip


def facelab(*args, ws: Path) -> None:
    cmd = [sys.executable, "-m", "facelab", *map(str, args), "-w", str(ws), "-q", "--yes"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd[3:])} failed: {proc.stderr.strip()[-600:]}")


def train(ws: Path, pair: int, minutes: float, iterations: int | None) -> dict:
    """`facelab run` for the pair, once per work folder; its run.json says what it trained."""
    if not (ws / "result.mp4").exists():
        budget = ["--iterations", iterations] if iterations else ["--minutes", minutes]
        start = time.monotonic()
        facelab("run", "--src", MEDIA / f"src_{pair}.mp4", "--dst", MEDIA / f"dst_{pair}.mp4", *budget, ws=ws)
        print(f"pair {pair}: trained and merged in {time.monotonic() - start:.0f} s", file=sys.stderr)
    return trained(ws, "run")


def trained(ws: Path, name: str) -> dict:
    state = ModelFolder.of(ws / "model", name, "Quick96").read_json(STATE)
    elapsed = state.get("elapsed_s", 0.0)
    return {"iterations": state["iteration"], "train_s": round(elapsed, 1),
            "ms_per_iter": round(1000 * elapsed / max(1, state["iteration"]), 1)}  # fmt: skip


def train_variant(ws: Path, name: str, minutes: float, iterations: int | None) -> dict:
    """One more Quick96 from the pair's faces, with TRAINING[name]'s options, for the same budget."""
    if name == "base":
        return trained(ws, "run")
    budget = ["--target-iter", iterations] if iterations else ["--minutes", minutes]
    opts = [a for k, v in TRAINING[name].items() for a in ("--opt", f"{k}={v}")]
    facelab("train", "--model", "quick96", "--name", name, *opts, *budget, "--save-every", 10, ws=ws)
    return trained(ws, name)


def frames_as(ws: Path, pair: int, fmt: str) -> None:
    """The dst frames in `fmt` (the aligned faces, found on the first, stay)."""
    if not any((ws / "data_dst").glob(f"00001.{fmt}")):
        facelab("extract-frames", "dst", "--input", MEDIA / f"dst_{pair}.mp4", "--format", fmt, "--overwrite",
                ws=ws)  # fmt: skip


def score(ws: Path, pair: int, variant: str, model: str = "run", label: str | None = None) -> dict:
    """`variant`'s merge of `model`, encoded and scored; its files are named `label` (the variant's)."""
    v, label = VARIANTS[variant], label or variant
    frames_as(ws, pair, v["frames"])
    # Every setting any variant changes is passed: a merge keeps the last one's in its session.
    settings = {k: DEFAULTS[k] for x in VARIANTS.values() for k in x["merge"]} | v["merge"]
    flags = [a for k, val in settings.items() for a in (f"--{k.replace('_', '-')}", val)]
    for made in ("merged", "merged_mask"):  # each variant merges every frame itself
        shutil.rmtree(ws / "data_dst" / made, ignore_errors=True)
    start = time.monotonic()
    facelab("merge", "--model", model, "--overwrite", *flags, ws=ws)
    merge_s = time.monotonic() - start
    video = ws / f"{label}.mp4"
    facelab("make-video", "--output", video, "--overwrite", "--colour", v["colour"], ws=ws)
    report = ws / f"{label}.json"
    facelab("eval", "--result", video, "--json", report, "--html", ws / f"report-{label}", ws=ws)
    summary = json.loads(report.read_text())["results"][0]["summary"]
    return {"merge_s": round(merge_s, 1), **{k: summary[k]["mean"] for k, _, _ in COLUMNS}}


def table(results: dict) -> str:
    head = f"{'pair':<6}{'variant':<11}" + "".join(f"{title:>10}" for _, title, _ in COLUMNS)
    lines = [head]  # variant names up to 10 characters
    for pair, got in results["pairs"].items():
        for variant, row in got["variants"].items():
            cells = "".join(f"{'-' if row[k] is None else fmt.format(row[k]):>10}" for k, _, fmt in COLUMNS)
            lines.append(f"{pair:<6}{variant:<11}{cells}")
    lines.append(f"{'target':<17}" + "".join(f"{TARGETS.get(k, ''):>10}" for k, _, _ in COLUMNS))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, required=True, help="folder for the workspaces (kept for reruns)")
    ap.add_argument("--pairs", type=int, nargs="+", default=[1, 2], choices=[1, 2])
    ap.add_argument("--minutes", type=float, default=20.0, help="Quick96 training time per pair")
    ap.add_argument("--budget-iterations", type=int, help="train this many iterations instead")
    ap.add_argument("--variants", default=",".join(VARIANTS), help="merge variants, comma-separated")
    ap.add_argument("--training", default="", help="training variants, comma-separated (e.g. "
                    f"{','.join(TRAINING)}), each merged with the new defaults")  # fmt: skip
    a = ap.parse_args()
    if not MEDIA.is_dir():
        raise SystemExit(f"the shared media are not at {MEDIA}")
    variants = a.variants.split(",")
    if unknown := set(variants) - set(VARIANTS):
        raise SystemExit(f"unknown variants {sorted(unknown)}: choose from {', '.join(VARIANTS)}")
    trainings = [t for t in a.training.split(",") if t]
    if unknown := set(trainings) - set(TRAINING):
        raise SystemExit(f"unknown training variants {sorted(unknown)}: choose from {', '.join(TRAINING)}")
    results = {"cpu": cpu_summary(), "budget": {"minutes": a.minutes, "iterations": a.budget_iterations},
               "variants": {v: VARIANTS[v] for v in variants}, "pairs": {}}  # fmt: skip
    for pair in a.pairs:
        ws = a.work / f"pair{pair}"
        got = {"training": train(ws, pair, a.minutes, a.budget_iterations), "variants": {}}
        for variant in variants:
            got["variants"][variant] = score(ws, pair, variant)
            print(f"pair {pair} {variant}: done", file=sys.stderr)
        for name in trainings:
            how = train_variant(ws, name, a.minutes, a.budget_iterations)
            got["variants"][f"t:{name}"] = {"training": how, **score(ws, pair, "new", model=name,
                                                                     label=f"t-{name}")}  # fmt: skip
            print(f"pair {pair} training {name}: done", file=sys.stderr)
        results["pairs"][pair] = got
    print(json.dumps(results, indent=1))
    print()
    print(table(results))


if __name__ == "__main__":
    main()
