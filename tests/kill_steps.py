"""SIGKILL every long step at random moments, then run it to the end, and compare with an
uninterrupted run: by hash where the step is deterministic, by file set and decodability where it
is not (video encoding). `tests/kill_harness.py --step STEP --runs N` drives it; training, whose
checkpoints are checked after every kill, keeps its own harness there.

Each round starts from a fresh copy of the step's inputs, kills the step `KILLS_PER_ROUND` times
(each kill at a random moment of the uninterrupted run's duration, each restart resuming what the
killed one left), then lets it finish. The inputs are built once under a work folder from
../shared/media (2-second clips) and ../shared/dfl-files (DeepFaceLab's own files).
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import random
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
MEDIA = SHARED / "media"
DFL = SHARED / "dfl-files"
FIXTURE_MODEL = ROOT / "tests" / "fixtures" / "models_v1" / "tiny_Quick96"
KILLS_PER_ROUND = 5


def cli(*args, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "facelab", *map(str, args)], capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, cwd=cwd)  # fmt: skip


def _ok(proc: subprocess.CompletedProcess) -> None:
    if proc.returncode:
        raise RuntimeError(f"{' '.join(proc.args[3:])} failed: {proc.stderr.strip()[-800:]}")


def build_inputs(work: Path) -> Path:
    """Everything the steps start from, once: clips, frames, faces, a merged workspace, DFL files."""
    base = work / "inputs"
    if (base / "ready").exists():
        return base
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir(parents=True)
    from facelab.media.ffmpeg import ffmpeg_exe

    for side in ("src", "dst"):
        subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(MEDIA / f"{side}_1.mp4"), "-t", "2", "-c:v",
                        "libx264", "-preset", "ultrafast", "-c:a", "aac", str(base / f"{side}.mp4")],
                       check=True)  # fmt: skip
    frames = base / "frames"
    _ok(cli("extract-frames", "dst", "--input", base / "dst.mp4", "-w", frames, "-q"))
    faces = base / "faces"
    shutil.copytree(frames, faces)
    _ok(cli("extract-faces", "dst", "-w", faces, "-q"))
    model = faces / "model" / "m_Quick96"
    shutil.copytree(FIXTURE_MODEL, model, ignore=shutil.ignore_patterns("merge_session*"))
    _tiny_xseg(base / "xseg", faces / "model")
    merged = base / "merged"
    shutil.copytree(faces, merged)
    _ok(cli("merge", "--model", "m", "-w", merged, "-q"))
    (base / "ready").touch()
    return base


def _tiny_xseg(ws: Path, model_dir: Path) -> None:
    """A tiny XSeg model (2 iterations on DeepFaceLab's labelled faces), for `xseg apply`."""
    from facelab import progress
    from facelab.train.recipes import RECIPES
    from facelab.train.trainer import TrainOptions, train
    from facelab.workspace import Workspace

    copy_faces([DFL / "aligned_xseg"], ws / "data_dst" / "aligned")
    progress.set_quiet(True)
    opts = TrainOptions(target_iter=2, arch={"resolution": 64, "base_ch": 8},
                        model_options={"resolution": 64}, seed=3, preview=False, status_every_s=1e9,
                        threads=2)  # fmt: skip
    with contextlib.redirect_stdout(io.StringIO()):  # its status lines
        result = train(Workspace(ws), RECIPES["xseg"], "xseg", opts)
    shutil.copytree(result.folder, model_dir / result.folder.name)


@dataclass
class Step:
    name: str
    inputs: str | None  # the folder of build_inputs' to start from (None: an empty workspace)
    args: Callable[[Path], list]  # the command, given the inputs folder
    outputs: list[str]  # globs, relative to the workspace, of what the step makes
    exact: bool = True  # compare by hash; else by file set and decodability


def copy_faces(folders: list[Path], aligned: Path) -> None:
    """The JPEG faces of `folders` into `aligned`, writable (shared/ is read-only)."""
    aligned.mkdir(parents=True)
    for p in sorted(p for folder in folders for p in folder.glob("*.jpg")):
        shutil.copy(p, aligned / p.name)
        (aligned / p.name).chmod(0o644)


def digest(p: Path) -> str:
    """sha256 of a file; of the pixels for a PNG, as a merged frame's mark holds its date."""
    data = cv2.imread(str(p), cv2.IMREAD_UNCHANGED).tobytes() if p.suffix == ".png" else p.read_bytes()
    return hashlib.sha256(data).hexdigest()


STEPS = {s.name: s for s in [
    Step("extract-frames", None, lambda b: ["extract-frames", "dst", "--input", b / "dst.mp4"],
         ["data_dst/*.png", "data_dst_video.json"]),
    Step("extract-faces", "frames", lambda b: ["extract-faces", "dst"],
         ["data_dst/aligned/*", "data_dst/aligned_debug/*"]),
    Step("sort", "faces", lambda b: ["sort", "dst", "--by", "blur"], ["data_dst/aligned/*.jpg"]),
    Step("merge", "faces", lambda b: ["merge", "--model", "m"],
         ["data_dst/merged/*.png", "data_dst/merged_mask/*.png"]),
    Step("make-video", "merged", lambda b: ["make-video"], ["result.mp4", "result_mask.mp4"], exact=False),
    Step("run", None, lambda b: ["run", "--src", b / "src.mp4", "--dst", b / "dst.mp4", "--iterations", "2"],
         ["result.mp4", "result_mask.mp4", "report/index.html"], exact=False),
    Step("import-dfl", None, lambda b: ["import-dfl", DFL / "model_tiny", "--name", "imported"],
         ["model/imported_*/model.safetensors", "model/imported_*/optimizer.safetensors"]),
    Step("convert-dfl", "dfl-faces", lambda b: ["faceset", "convert-dfl", "src"], ["data_src/aligned/*.jpg"]),
    Step("xseg-apply", "faces", lambda b: ["xseg", "apply", "dst", "--model", "xseg"],
         ["data_dst/aligned/*.jpg"]),
    Step("export", "faces", lambda b: ["export", "--model", "m"], ["model/m.dfm"]),
]}  # fmt: skip


def fresh(step: Step, base: Path, ws: Path) -> Path:
    shutil.rmtree(ws, ignore_errors=True)
    if step.inputs == "dfl-faces":
        copy_faces([DFL / "aligned", DFL / "aligned_xseg"], ws / "data_src" / "aligned")
    elif step.inputs:
        shutil.copytree(base / step.inputs, ws)
    else:
        ws.mkdir(parents=True)
    return ws


def outputs(step: Step, ws: Path) -> dict[str, str]:
    """{relative path: sha256, or "ok" where only decodability counts} of the step's outputs."""
    found = {}
    for pattern in step.outputs:
        for p in sorted(ws.glob(pattern)):
            rel = str(p.relative_to(ws))
            if step.exact:
                found[rel] = digest(p)
            elif p.suffix == ".mp4":
                cap = cv2.VideoCapture(str(p))
                frames = 0
                while cap.read()[0]:
                    frames += 1
                found[rel] = f"{frames} frames"
            else:
                found[rel] = "present" if p.stat().st_size else "empty"
    return found


def leftovers(ws: Path) -> list[str]:
    """Temporary files a finished step must not leave behind (hidden partial files and folders)."""
    return sorted(str(p.relative_to(ws)) for p in ws.rglob(".*") if ".tmp" in p.name or p.name.startswith(
        (".frames", ".result", ".facelab-tmp")))  # fmt: skip


def kill_rounds(step_name: str, work: Path, runs: int, seed: int = 0, running: bool = False) -> dict:
    """`runs` kills of the step in rounds of KILLS_PER_ROUND; after each round the step finishes and
    its outputs are compared with the uninterrupted run's. `running`: count only the kills that
    interrupted the step (a restart that finished before its kill ends the round), as the harness
    does; the suite counts every kill, which keeps its time bounded."""
    step, base, rng = STEPS[step_name], build_inputs(work), random.Random(seed)
    ref_ws = fresh(step, base, work / f"{step.name}-reference")
    start = time.monotonic()
    _ok(cli(*step.args(base), "-w", ref_ws, "-q"))
    duration = time.monotonic() - start
    start = time.monotonic()  # what any start costs before the step does anything (Python, the CLI)
    subprocess.run([sys.executable, "-c", "import facelab.cli"], check=True)
    startup = min(time.monotonic() - start, 0.8 * duration)
    expected = outputs(step, ref_ws)
    if not expected:
        raise RuntimeError(f"{step.name}: the uninterrupted run made none of {step.outputs}")
    stats = {"step": step.name, "kills": 0, "killed_while_running": 0, "rounds": 0, "matched": 0,
             "reference_s": round(duration, 2), "failures": []}  # fmt: skip
    ws = work / f"{step.name}-killed"
    counted = "killed_while_running" if running else "kills"
    while stats[counted] < runs:
        if stats["rounds"] > 4 * runs:  # a step too short to be caught running
            stats["failures"].append(f"only {stats['killed_while_running']} kills caught it running")
            break
        fresh(step, base, ws)
        for _ in range(min(KILLS_PER_ROUND, runs - stats[counted])):
            cmd = [sys.executable, "-m", "facelab", *map(str, step.args(base)), "-w", str(ws), "-q"]
            with tempfile.TemporaryFile("w+") as err:
                proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err)
                time.sleep(startup + rng.uniform(0, 1) * (duration - startup))
                alive = proc.poll() is None
                proc.kill()
                proc.wait()
                err.seek(0)
                said = err.read().strip()
            stats["kills"] += 1
            stats["killed_while_running"] += alive
            if not alive and proc.returncode and "--overwrite" not in said:  # a restart that failed
                stats["failures"].append(f"kill {stats['kills']}: the restart failed: {said[-400:]}")
                print(f"{step.name}: {stats['failures'][-1]}", file=sys.stderr, flush=True)
            if running and not alive:  # it finished: the rest of the round's kills would find it done
                # Runs are shorter than the reference was (a lighter load, a resumed run): kill sooner.
                duration = max(startup * 1.05, 0.9 * duration)
                break
        final = cli(*step.args(base), "-w", ws, "-q")
        stats["rounds"] += 1
        done = outputs(step, ws)
        # A kill after the step had finished leaves its whole result, which the rerun will not replace.
        finished = final.returncode == 0 or ("--overwrite" in final.stderr and done == expected)
        problems = []
        if not finished:
            problems.append(f"the run after the kills failed: {final.stderr.strip()[-400:]}")
        if done != expected:
            problems.append(_difference(expected, done))
        if left := leftovers(ws):
            problems.append(f"left behind: {', '.join(left[:3])}")
        if problems:
            stats["failures"].append(f"round {stats['rounds']}: " + "; ".join(problems))
            print(f"{step.name}: {stats['failures'][-1]}", file=sys.stderr, flush=True)
        else:
            stats["matched"] += 1
        caught, matched = stats["killed_while_running"], f"{stats['matched']} of {stats['rounds']} rounds"
        print(f"{step.name}: {stats['kills']} kills ({caught} while it ran), {matched} equal the "
              "uninterrupted run", file=sys.stderr, flush=True)  # fmt: skip
    return stats


def _difference(expected: dict, got: dict) -> str:
    missing = sorted(set(expected) - set(got))
    extra = sorted(set(got) - set(expected))
    changed = sorted(k for k in set(expected) & set(got) if expected[k] != got[k])
    kinds = (("missing", missing), ("extra", extra), ("different", changed))
    parts = [f"{label} {', '.join(names[:3])} ({len(names)})" for label, names in kinds if names]
    return "outputs differ from the uninterrupted run's: " + "; ".join(parts)
