"""`facelab run`: the seven steps in order, with defaults, resumable as a whole.

`<workspace>/run.json` records the two videos and each finished step; a rerun skips finished
steps, and the steps that can stop half-way (face extraction, training, merging) continue
where they stopped through their own journals and checkpoints.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from facelab import progress
from facelab.errors import FacelabError, UsageError
from facelab.fsutil import read_json, write_json_atomic
from facelab.train.recipes import RECIPES
from facelab.workspace import Workspace

STATE = "run.json"


@dataclass
class RunOptions:
    src: Path
    dst: Path
    model: str = "quick96"
    name: str = "run"
    iterations: int = 0  # 0 with minutes = 0: the default budget below
    minutes: float = 0.0
    src_reference: Path | None = None
    dst_reference: Path | None = None
    batch: int | None = None
    overwrite: bool = False  # replace frames and faces a workspace already holds from elsewhere
    train_arch: dict = field(default_factory=dict)  # tests: a tiny network

    def budget(self) -> tuple[int, float]:
        if not self.iterations and not self.minutes:
            return 0, 30.0  # half an hour of training unless told otherwise
        return self.iterations, self.minutes


@dataclass
class StepResult:
    step: str
    seconds: float
    detail: str
    skipped: bool = False


class Run:
    def __init__(self, ws: Workspace, opts: RunOptions):
        self.ws, self.opts = ws, opts
        self.path = ws.root / STATE
        self.resumed = self.path.exists()
        self.state = self._load()
        self.results: list[StepResult] = []

    def _load(self) -> dict:
        videos = {"src": str(self.opts.src.resolve()), "dst": str(self.opts.dst.resolve())}
        if not self.path.exists():
            return {"videos": videos, "done": {}}
        damaged = f"{self.path} is damaged ({{}}): delete it to start the run again"
        try:
            state = read_json(self.path)
        except (OSError, ValueError) as exc:
            raise FacelabError(damaged.format(exc)) from None
        done = state.get("done") if isinstance(state, dict) else None
        steps_ok = isinstance(done, dict) and all(
            isinstance(d, dict) and isinstance(d.get("detail"), str)
            and type(d.get("seconds")) in (int, float)
            for d in done.values()
        )  # fmt: skip
        if not steps_ok:
            raise FacelabError(damaged.format("not a record of steps done"))
        if state.get("videos") != videos:
            raise FacelabError(
                f"{self.ws.root} holds a run of other videos ({state.get('videos')}): use another --workspace"
            )
        return state

    def model_choice(self, decide) -> dict:
        """`--model auto`'s choice ({"model", "resolution"}): the one this run recorded, else
        `decide()`'s, recorded at once, so a rerun trains on the same model whatever it measures."""
        got = self.state.get("model")
        if not (isinstance(got, dict) and got.get("model") in RECIPES and type(got.get("resolution")) is int):
            got = decide()
            self.state["model"] = got
            write_json_atomic(self.path, self.state)
        return got

    def step(self, name: str, fn) -> None:
        """Run `fn` (returning a detail line) unless the step finished in an earlier run."""
        if name in self.state["done"]:
            prev = self.state["done"][name]
            self.results.append(StepResult(name, prev["seconds"], prev["detail"], skipped=True))
            progress.say(f"[{name}] done in an earlier run: {prev['detail']}")
            return
        progress.say(f"[{name}] ...")
        start = time.perf_counter()
        detail = fn()
        seconds = time.perf_counter() - start
        self.state["done"][name] = {"seconds": round(seconds, 1), "detail": detail}
        write_json_atomic(self.path, self.state)
        self.results.append(StepResult(name, seconds, detail))
        progress.say(f"[{name}] {detail} ({seconds:.1f} s)")


def run(ws: Workspace, opts: RunOptions) -> list[StepResult]:
    from facelab.faces.extract import ExtractOptions, extract_faces
    from facelab.faces.faceset import load_faceset, move_to_trash
    from facelab.faces.identity import split_by_person
    from facelab.media.frames import DEFAULT_FORMAT, extract_frames
    from facelab.media.result import VideoOptions, make_video
    from facelab.merge.pipeline import MergeModel, merge
    from facelab.merge.session import MergeSession
    from facelab.models.folder import ModelFolder
    from facelab.train.recipes import recipe
    from facelab.train.trainer import TrainOptions, train

    for video in (opts.src, opts.dst):
        if not video.is_file():
            raise FacelabError(f"{video} does not exist: check the path")
    for photo in (opts.src_reference, opts.dst_reference):
        if photo is not None and not photo.is_file():
            raise FacelabError(f"{photo} does not exist: check the reference photo's path")
    if opts.model == "auto" and opts.iterations:
        raise UsageError("--model auto decides by training time: use --minutes, not --iterations")
    ws.init()
    r = Run(ws, opts)
    videos = {"src": opts.src, "dst": opts.dst}
    refs = {"src": opts.src_reference, "dst": opts.dst_reference}

    def frames(side: str):
        def go() -> str:
            res = extract_frames(videos[side], ws.frames_dir(side), fmt=DEFAULT_FORMAT[side],
                                 overwrite=r.resumed or opts.overwrite,
                                 info_path=ws.video_info_path(side))  # fmt: skip
            return f"{res.count} frames -> {ws.frames_dir(side)}"

        return go

    def faces(side: str):
        def go() -> str:
            opts_ = ExtractOptions(max_faces=0 if refs[side] else 1, debug_images=side == "dst",
                                   smooth_fps=25.0 if side == "dst" else None)  # fmt: skip
            debug = ws.aligned_debug_dir(side) if side == "dst" else None
            s = extract_faces(ws.frames_dir(side), ws.aligned_dir(side), opts_, debug_dir=debug,
                              overwrite=opts.overwrite)  # fmt: skip
            detail = f"{s.faces} faces in {s.frames} frames"
            if refs[side]:
                fs = load_faceset(ws.aligned_dir(side))
                kept, others = split_by_person(fs.faces, refs[side])
                if others:
                    move_to_trash(fs, others)
                detail += f", {len(kept)} of the person in {refs[side].name} kept"
            if not any(ws.aligned_dir(side).glob("*.jpg")):
                raise FacelabError(
                    f"no {side} face was found in {videos[side]}: use a video with a visible face"
                )
            return detail + f" -> {ws.aligned_dir(side)}"

        return go

    iterations, minutes = opts.budget()

    def decide() -> dict:
        from facelab.device import pick_device
        from facelab.train.auto import pick
        from facelab.train.setup import face_size

        size = face_size(ws.aligned_dir("dst"), recipe("saehd").face_type)
        progress.say(f"--model auto: the dst faces fill about {size or 0:.0f} px; timing each candidate's "
                     f"training step for {minutes:g} minutes of training:")  # fmt: skip
        c = pick(size, minutes * 60, pick_device("auto"), progress.say)
        progress.say(f"--model auto: {c.label()}")
        return {"model": c.model, "resolution": c.resolution}

    def kind() -> tuple[str, dict]:
        """The model kind and its resolution option (none for Quick96, whose is fixed)."""
        if opts.model != "auto":
            return opts.model, {}
        got = r.model_choice(decide)
        return got["model"], {} if got["model"] == "quick96" else {"resolution": got["resolution"]}

    def training() -> str:
        model, options = kind()
        rec = recipe(model)
        topts = TrainOptions(target_iter=iterations, max_minutes=minutes, batch=opts.batch, status_every_s=60,
                             arch=dict(opts.train_arch), model_options=options)  # fmt: skip
        res = train(ws, rec, opts.name, topts)
        return f"{rec.class_name} '{opts.name}' at iteration {res.iteration} -> {res.folder}"

    def merging() -> str:
        folder = ModelFolder.of(ws.model_dir, opts.name, recipe(kind()[0]).class_name)
        s = merge(ws, MergeModel(folder), MergeSession.of(folder), overwrite=True)
        done = s.merged + s.skipped
        return f"{done} frames, {s.faces} faces merged, {s.no_face} without a face -> {ws.merged_dir}"

    def video() -> str:
        out = make_video(ws, VideoOptions(overwrite=True))
        return f"{out} and {out.stem}_mask{out.suffix}"

    def quality() -> str:
        from facelab.eval.report import summary_lines
        from facelab.eval.workspace import EvalOptions, run_eval

        evs, page = run_eval(ws, EvalOptions(dst=opts.dst, dst_faceset=True))
        return "\n".join([str(page), *(f"      {line}" for line in summary_lines(evs[0]))])

    r.step("1 extract src frames", frames("src"))
    r.step("2 extract dst frames", frames("dst"))
    r.step("3 extract src faces", faces("src"))
    r.step("4 extract dst faces", faces("dst"))
    r.step("5 train", training)
    r.step("6 merge", merging)
    r.step("7 make video", video)
    r.step("8 quality report", quality)
    return r.results


def summary(results: list[StepResult]) -> str:
    width = max(len(x.step) for x in results)
    lines = ["summary:"]
    for x in results:
        when = "earlier run" if x.skipped else f"{x.seconds:.1f} s"
        lines.append(f"  {x.step:<{width}}  {when:>11}  {x.detail}")
    lines.append(f"  total this run: {sum(x.seconds for x in results if not x.skipped):.0f} s")
    return "\n".join(lines)
