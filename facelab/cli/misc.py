"""info, workspace init and demo."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

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
        help="the workflow on built-in sample clips (default workspace: ./demo-workspace)",
    )
    p.set_defaults(handler=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    from facelab.demo import make_sample_videos
    from facelab.faces.extract import ExtractOptions, extract_faces
    from facelab.media.frames import extract_frames
    from facelab.media.probe import probe_video
    from facelab.media.video import collect_frames, encode_video

    ws = Workspace(args.workspace or Path("demo-workspace"))
    start = time.perf_counter()
    ws.init()
    videos = make_sample_videos(ws)
    say(f"sample clips: {videos['src']} and {videos['dst']} (with sound)")
    for side in ("src", "dst"):
        r = extract_frames(
            videos[side], ws.frames_dir(side), overwrite=True, info_path=ws.video_info_path(side)
        )
        say(f"step {1 if side == 'src' else 2}: {r.count} {side} frames -> {ws.frames_dir(side)}")
    for side in ("src", "dst"):
        opts = ExtractOptions(debug_images=side == "dst", smooth_fps=25.0 if side == "dst" else None)
        debug = ws.aligned_debug_dir(side) if side == "dst" else None
        s = extract_faces(ws.frames_dir(side), ws.aligned_dir(side), opts, debug_dir=debug, overwrite=True)
        step = 3 if side == "src" else 4
        say(f"step {step}: {s.faces} {side} faces in {s.frames} frames -> {ws.aligned_dir(side)}")
    dst = probe_video(videos["dst"])
    frames = collect_frames(ws.frames_dir("dst"), start=1)
    out = ws.root / "result.mp4"
    r = encode_video(frames, out, dst.fps_fraction, audio_from=Path(dst.path), overwrite=True, label=out.name)
    say(f"step 7: {r.frames} frames with the dst sound -> {out}")
    say(f"done in {time.perf_counter() - start:.0f} s")
    say(f"debug images (landmarks, detector box, crop): {ws.aligned_debug_dir('dst')}")
    say(
        "Merging is not built yet, so result.mp4 is the dst clip rebuilt from its frames with its sound. "
        f"Train a model on these faces with `facelab train --model quick96 -w {ws.root}`. "
        "For your own videos: put data_src.mp4 and data_dst.mp4 in a workspace and run "
        "`facelab extract-frames src`, `extract-frames dst`, `extract-faces src`, `extract-faces dst`, "
        "`train`."
    )
    return 0
