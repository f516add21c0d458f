"""Steps 1, 2 and 7: extract-frames and make-video."""

from __future__ import annotations

import argparse
from pathlib import Path

from facelab import prompts
from facelab.cli.argtypes import frame_rate
from facelab.cli.common import workspace_from
from facelab.errors import FacelabError, UsageError
from facelab.media.frames import BY_NAME as FRAME_BY_NAME
from facelab.media.frames import DEFAULT_FORMAT, extract_frames
from facelab.media.frames import OPTIONS as FRAME_OPTIONS
from facelab.media.result import BY_NAME as VIDEO_BY_NAME
from facelab.media.result import OPTIONS as VIDEO_OPTIONS
from facelab.media.result import VideoOptions, make_video
from facelab.media.video import VIDEO_FORMATS
from facelab.options import add_arguments
from facelab.progress import say
from facelab.workspace import SIDES


def register_extract(sub, common) -> None:
    p = sub.add_parser(
        "extract-frames",
        parents=[common],
        help="steps 1-2: video to numbered frames (src: optional fps limit; dst: every frame)",
        description="Decode data_src.* or data_dst.* into data_src/00001.jpg ... "
        "dst always keeps every frame, and its frame rate, size and audio are recorded "
        "in data_dst_video.json for make-video.",
    )
    p.add_argument("side", choices=SIDES, help="which video")
    p.add_argument("--input", "-i", type=Path, help="video file (default: data_<side>.* in the workspace)")
    add_arguments(p, FRAME_OPTIONS, {"image_format": "png for dst, jpg for src"})
    p.add_argument("--overwrite", action="store_true", help="replace frames already in the folder")
    p.set_defaults(handler=cmd_extract_frames)


def cmd_extract_frames(args: argparse.Namespace) -> int:
    ws = workspace_from(args)
    if args.side == "dst" and args.fps is not None:
        raise UsageError("--fps is not allowed for dst: every dst frame is needed to rebuild the video")
    video = args.input if args.input is not None else ws.find_video(args.side)
    if not video.exists():
        raise FacelabError(f"{video} does not exist: check the path given to --input")
    fps = args.fps
    if args.side == "src" and fps is None:
        fps = prompts.ask_option(FRAME_BY_NAME["fps"], label="frames per second to keep, 0 = every frame")
    fps = fps or None  # 0: every frame
    fmt = args.image_format or prompts.ask_option(FRAME_BY_NAME["image_format"], DEFAULT_FORMAT[args.side],
                                                  label="frame image type")  # fmt: skip
    out_dir = ws.frames_dir(args.side)
    result = extract_frames(
        video, out_dir, fmt=fmt, fps=fps, overwrite=args.overwrite, info_path=ws.video_info_path(args.side)
    )
    if result.replaced:
        say(f"replaced {result.replaced} earlier frames in {out_dir}")
    rate = result.count / result.seconds if result.seconds > 0 else float("inf")
    say(f"{result.count} frames -> {out_dir} in {result.seconds:.1f} s ({rate:.0f} frames/s)")
    return 0


def register_make_video(sub, common) -> None:
    p = sub.add_parser(
        "make-video",
        parents=[common],
        help="step 7: data_dst/merged/ -> result.mp4 with the dst sound, and result_mask.mp4",
        description="Encode the merged frames to result.<ext> (H.264, yuv420p, tv range) at the dst "
        "video's own frame rate with its audio, and data_dst/merged_mask/ to a lossless result_mask.<ext>.",
    )
    add_arguments(p, VIDEO_OPTIONS)
    p.add_argument(
        "--from", dest="from_dir", type=Path, help="any folder of numbered frames instead of merged/"
    )
    p.add_argument("--mask-from", type=Path, help="folder of numbered mask frames (default: merged_mask/)")
    p.add_argument("--fps", type=frame_rate, help="frame rate (default: the dst video's own)")
    p.add_argument("--audio", type=Path, help="take the sound from this file (default: the dst video)")
    p.add_argument("--no-audio", action="store_true", help="write no sound track")
    p.add_argument("--output", "-o", type=Path, help="output file (default: WORKSPACE/result.<ext>)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing result")
    p.set_defaults(handler=cmd_make_video)


def cmd_make_video(args: argparse.Namespace) -> int:
    ws = workspace_from(args)
    fmt = args.fmt or prompts.ask_option(VIDEO_BY_NAME["fmt"], label="output format")
    bitrate = args.bitrate
    if bitrate is None:  # asked for the lossy formats only
        lossy = not VIDEO_FORMATS[fmt][1]
        bitrate = prompts.ask_option(VIDEO_BY_NAME["bitrate"], label="bitrate, Mbit/s") if lossy else None
        bitrate = bitrate or VIDEO_BY_NAME["bitrate"].default
    make_video(ws, VideoOptions(fmt=fmt, bitrate=bitrate, from_dir=args.from_dir, mask_from=args.mask_from,
                                fps=args.fps, audio=args.audio, no_audio=args.no_audio, output=args.output,
                                overwrite=args.overwrite, mark=args.mark is not False,
                                colour=args.colour or VIDEO_BY_NAME["colour"].default))  # fmt: skip
    return 0
