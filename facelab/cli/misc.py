"""info, workspace init and demo."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from facelab.cli.argtypes import positive_float
from facelab.cli.common import workspace_from
from facelab.progress import say
from facelab.workspace import Workspace


def register_setup(sub, common) -> None:
    p = sub.add_parser("info", parents=[common], help="versions, devices and face models, for bug reports")
    p.set_defaults(handler=cmd_info)
    p = sub.add_parser("workspace", parents=[common], help="workspace tools: `workspace init [DIR]`")
    wsub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    init = wsub.add_parser(
        "init",
        parents=[common],
        help="create the folder layout",
        description="Create data_src/, data_src/aligned/, data_dst/, data_dst/aligned/ and model/.",
    )
    init.add_argument("dir", nargs="?", type=Path, help="workspace folder (default: --workspace)")
    init.set_defaults(handler=cmd_workspace_init)


def cmd_info(args: argparse.Namespace) -> int:
    from facelab.info import collect

    rows = collect()
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        say(f"{key:<{width}}  {value}")
    return 0


def cmd_workspace_init(args: argparse.Namespace) -> int:

    ws = Workspace(args.dir) if args.dir else workspace_from(args)
    created = ws.init()
    say(
        f"workspace {ws.root}: created {len(created)} folders" if created else f"workspace {ws.root} is ready"
    )
    for folder in created:
        say(f"  {folder}")
    say(f"next: put data_src.mp4 and data_dst.mp4 in {ws.root}, then `facelab extract-frames src`")
    return 0


def register_demo(sub, common) -> None:
    p = sub.add_parser(
        "demo",
        parents=[common],
        help="the whole workflow on built-in sample clips (default workspace: ./demo-workspace)",
        description="Makes two short clips with head motion from photos that ship with scikit-image and "
        "matplotlib, then runs `facelab run` on them with a small training budget.",
    )
    p.add_argument("--minutes", type=positive_float, default=4.0, help="training time (default: 4)")
    p.set_defaults(handler=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from facelab.demo import make_sample_videos
    from facelab.models.folder import PREVIEW, ModelFolder
    from facelab.run import RunOptions, run, summary

    ws = Workspace(args.workspace or Path("demo-workspace"))
    start = time.perf_counter()
    videos = make_sample_videos(ws)
    say(f"sample clips: {videos['src']} and {videos['dst']} (with sound)")
    results = run(ws, RunOptions(src=videos["src"], dst=videos["dst"], name="demo", minutes=args.minutes))
    say(summary(results))
    say(f"done in {time.perf_counter() - start:.0f} s")
    say(f"result:        {ws.root / 'result.mp4'} (mask: result_mask.mp4)")
    say(f"preview:       {ModelFolder.of(ws.model_dir, 'demo', 'Quick96').file(PREVIEW)}")
    say(f"aligned faces: {ws.aligned_dir('src')} and {ws.aligned_dir('dst')}")
    say(
        f"{args.minutes:g} minutes of training give a blurred face that starts to look like the source; "
        "real swaps need hours to days. On your own videos: `facelab run --src A.mp4 --dst B.mp4 "
        "--minutes 600`, or `facelab train` to keep training a model and `facelab merge` again."
    )
    return 0
