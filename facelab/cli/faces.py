"""Steps 3 and 4: extract-faces, and the faceset tools (sort, filter, faceset sheet)."""

from __future__ import annotations

import argparse
import json

from facelab import prompts
from facelab.errors import UsageError
from facelab.faces.align import FACE_TYPE_ALIASES, canonical_face_type
from facelab.faces.detect import DEFAULT_DETECTOR, DETECTORS
from facelab.faces.extract import NO_FACE_LIST, ExtractOptions, extract_faces
from facelab.progress import say

FACE_TYPE_CHOICES = ["half", "mid-full", "full", "whole", "head"]


def int_in(lo: int, hi: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"must be from {lo} to {hi}, not {value}")
        return value

    return parse


def register(sub, common) -> None:
    p = sub.add_parser(
        "extract-faces",
        parents=[common],
        help="steps 3-4: detect, 68 landmarks, align -> data_<side>/aligned/ (dst: + aligned_debug/)",
        description="Find faces in data_src/ or data_dst/ frames and write aligned faces with embedded "
        "metadata to aligned/<frame>_<k>.jpg. A rerun continues where the last one stopped.",
    )
    p.add_argument("side", choices=["src", "dst"])
    p.add_argument(
        "--face-type",
        choices=sorted(FACE_TYPE_ALIASES),
        metavar="{half,mid-full,full,whole,head}",
        help="area around the face to keep (default: whole)",
    )
    p.add_argument(
        "--max-faces", type=int_in(0, 100), help="faces per frame, largest first; 0 = all (default: 0)"
    )
    p.add_argument("--size", type=int_in(256, 2048), help="aligned image size in pixels (default: 512)")
    p.add_argument("--jpeg-quality", type=int_in(1, 100), help="JPEG quality of aligned faces (default: 90)")
    p.add_argument(
        "--format", choices=["jpg", "png"], default="jpg", help="aligned image type (default: jpg)"
    )
    p.add_argument("--detector", choices=list(DETECTORS), help=f"face detector (default: {DEFAULT_DETECTOR})")
    p.add_argument("--debug-images", action=argparse.BooleanOptionalAction, default=None,
                   help="write aligned_debug/<frame>.jpg (default: no for src, yes for dst)")  # fmt: skip
    p.add_argument("--smooth", action=argparse.BooleanOptionalAction, default=None,
                   help="smooth landmarks over time (default: yes for dst, no for src)")  # fmt: skip
    p.add_argument("--workers", type=int_in(1, 64), help="worker processes (default: one per core)")
    p.add_argument("--overwrite", action="store_true", help="discard earlier aligned faces and start again")
    p.set_defaults(handler=cmd_extract_faces)


def cmd_extract_faces(args: argparse.Namespace) -> int:
    from facelab.cli import workspace_from

    ws = workspace_from(args)
    side = args.side
    face_help = "How much of the head each aligned face shows."
    face_type = args.face_type or prompts.ask_choice("face type", "whole", FACE_TYPE_CHOICES, face_help)
    try:
        face_type = canonical_face_type(face_type)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    default_size = 768 if face_type == "head" else 512
    opts = ExtractOptions(
        face_type=face_type,
        max_faces=args.max_faces if args.max_faces is not None
        else prompts.ask_int("max faces per frame, 0 = all", 0, 0, 100),
        size=args.size or prompts.ask_int("aligned image size", default_size, 256, 2048),
        jpeg_quality=args.jpeg_quality or prompts.ask_int("JPEG quality", 90, 1, 100),
        detector=args.detector or prompts.ask_choice("detector", DEFAULT_DETECTOR, list(DETECTORS)),
        image_format=args.format,
        debug_images=args.debug_images if args.debug_images is not None
        else prompts.ask_bool("write debug images", side == "dst"),
    )  # fmt: skip
    smooth = args.smooth if args.smooth is not None else side == "dst"
    if smooth:
        opts.smooth_fps = _video_fps(ws, side)
    if args.workers:
        opts.workers = args.workers
    debug_dir = ws.aligned_debug_dir(side) if opts.debug_images else None
    s = extract_faces(
        ws.frames_dir(side), ws.aligned_dir(side), opts, debug_dir=debug_dir, overwrite=args.overwrite
    )

    rate = s.processed / s.seconds if s.seconds > 0 else 0.0
    say(f"{s.frames} frames: {s.processed} processed in {s.seconds:.1f} s ({rate:.1f} frames/s), "
        f"{s.skipped} already done; {s.faces} faces written -> {ws.aligned_dir(side)}")  # fmt: skip
    if s.no_face:
        say(f"{len(s.no_face)} frames with no face (listed in {ws.aligned_dir(side) / NO_FACE_LIST})")
    if s.unreadable:
        say(f"{len(s.unreadable)} frames could not be read (corrupt or empty): {', '.join(s.unreadable[:5])}")
    if s.ignored_files:
        say(f"ignored {len(s.ignored_files)} files that are not images: {', '.join(s.ignored_files[:5])}")
    if debug_dir is not None:
        say(f"debug images -> {debug_dir}")
    return 0


def _video_fps(ws, side: str) -> float:
    path = ws.video_info_path(side)
    if path.exists():
        try:
            return float(json.loads(path.read_text())["fps_float"])
        except (ValueError, KeyError):
            pass
    return 30.0
