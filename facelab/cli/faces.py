"""Steps 3 and 4: extract-faces, and the faceset tools (sort, filter, faceset sheet)."""

from __future__ import annotations

import argparse
from pathlib import Path

from facelab import prompts
from facelab.cli.argtypes import int_in
from facelab.cli.common import workspace_from
from facelab.dfl.faceset import convert_faceset
from facelab.errors import FacelabError, UsageError
from facelab.faces.align import canonical_face_type, face_type_name
from facelab.faces.extract import NO_FACE_LIST, OPTIONS, ExtractOptions, earlier_options, extract_faces
from facelab.faces.faceset import (
    editing,
    load_faceset,
    move_to_trash,
    original_names,
    rename_in_order,
    restore_names,
)
from facelab.faces.identity import DEFAULT_THRESHOLD, face_descriptors, split_by_person
from facelab.faces.sheet import write_sheets
from facelab.faces.sort import METHODS as SORT_METHODS
from facelab.faces.sort import sort_faceset
from facelab.media.probe import read_video_record
from facelab.options import add_arguments
from facelab.progress import say
from facelab.workspace import SIDES


def register(sub, common) -> None:
    p = sub.add_parser(
        "extract-faces",
        parents=[common],
        help="steps 3-4: detect, 68 landmarks, align -> data_<side>/aligned/ (dst: + aligned_debug/)",
        description="Find faces in data_src/ or data_dst/ frames and write aligned faces with embedded "
        "metadata to aligned/<frame>_<k>.jpg. A rerun continues where the last one stopped, with its "
        "settings as the defaults.",
    )
    p.add_argument("side", choices=SIDES)
    by_side = "yes for dst, no for src"
    add_arguments(p, OPTIONS, {"debug_images": by_side, "smooth": by_side})
    p.add_argument("--workers", type=int_in(1, 64), help="worker processes (default: one per core)")
    p.add_argument("--overwrite", action="store_true", help="discard earlier aligned faces and start again")
    p.set_defaults(handler=cmd_extract_faces)


# The settings asked for on a terminal when no flag gives them, with their prompts.
PROMPTS = {"face_type": "face type", "max_faces": "max faces per frame, 0 = all",
           "size": "aligned image size", "jpeg_quality": "JPEG quality", "detector": "detector",
           "debug_images": "write debug images"}  # fmt: skip


def cmd_extract_faces(args: argparse.Namespace) -> int:
    ws = workspace_from(args)
    side = args.side
    earlier = None if args.overwrite else earlier_options(ws.aligned_dir(side))
    was = earlier or ExtractOptions()
    # A rerun continues the earlier extraction: its settings are the defaults.
    defaults = {"face_type": face_type_name(was.face_type), "max_faces": was.max_faces,
                "size": was.size, "jpeg_quality": was.jpeg_quality, "image_format": was.image_format,
                "detector": was.detector, "debug_images": side == "dst",
                "smooth": was.smooth_fps is not None if earlier else side == "dst"}  # fmt: skip
    values = {}
    for opt in OPTIONS:
        default = defaults[opt.name]
        if opt.name == "size" and not earlier:
            default = 768 if values["face_type"] == "head" else 512
        given = getattr(args, opt.name)
        if given is not None:
            values[opt.name] = given
        elif opt.name in PROMPTS:
            values[opt.name] = prompts.ask_option(opt, default, PROMPTS[opt.name])
        else:
            values[opt.name] = default
    smooth = values.pop("smooth")
    opts = ExtractOptions(**values | {"face_type": canonical_face_type(values["face_type"])})
    if smooth:
        opts.smooth_fps = _video_fps(ws, side)
    if args.workers:
        opts.workers = args.workers
    debug_dir = ws.aligned_debug_dir(side) if opts.debug_images else None
    s = extract_faces(
        ws.frames_dir(side), ws.aligned_dir(side), opts, debug_dir=debug_dir, overwrite=args.overwrite
    )

    if s.replaced:
        say(f"removed {s.replaced} earlier aligned faces (--overwrite)")
    rate = s.processed / s.seconds if s.seconds > 0 else 0.0
    say(
        f"{s.frames} frames: {s.processed} processed in {s.seconds:.1f} s ({rate:.1f} frames/s), "
        f"{s.skipped} already done; {s.faces} faces written -> {ws.aligned_dir(side)}"
    )
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
    """The frame rate landmark smoothing works at: the video's own, or 30 for loose frames."""
    record = read_video_record(ws.video_info_path(side))
    return float(record[0].fps_fraction) if record else 30.0


def register_faceset_tools(sub, common) -> None:
    p = sub.add_parser(
        "sort",
        parents=[common],
        help="sort or thin out aligned faces (rejects move to aligned_trash/)",
        description="Sort data_<side>/aligned/ by a method and rename the faces 00000.jpg … in that order. "
        "Faces that a method rejects (oneface, best, --trash-worst) move to aligned_trash/; nothing is "
        "deleted. --restore-names undoes the renaming.",
    )
    p.add_argument("side", choices=SIDES)
    p.add_argument("--by", choices=SORT_METHODS, help="sort method (default: blur)")
    p.add_argument(
        "--target",
        type=int_in(1, 1_000_000),
        default=2000,
        help="best: how many faces to keep (default: 2000)",
    )
    p.add_argument(
        "--trash-worst",
        type=float,
        default=0.0,
        metavar="PCT",
        help="move the last PCT %% of the sorted order to the trash (default: 0)",
    )
    p.add_argument("--restore-names", action="store_true", help="undo earlier sorting renames")
    p.add_argument("--dry-run", action="store_true", help="print what would happen, change nothing")
    p.set_defaults(handler=cmd_sort)

    p = sub.add_parser(
        "filter",
        parents=[common],
        help="keep only the faces of the person in a reference photo",
        description="Compare every aligned face with the face in --reference (dlib 128-D descriptors) and "
        "move the faces of other people to aligned_trash/.",
    )
    p.add_argument("side", choices=SIDES)
    p.add_argument("--reference", type=Path, required=True, help="a photo showing only the person to keep")
    p.add_argument(
        "--threshold",
        type=float,
        default=DEFAULT_THRESHOLD,
        help=f"largest descriptor distance for the same person (default: {DEFAULT_THRESHOLD})",
    )
    p.add_argument("--dry-run", action="store_true", help="print what would happen, change nothing")
    p.set_defaults(handler=cmd_filter)

    p = sub.add_parser("faceset", parents=[common],
                       help="faceset tools: `faceset sheet|convert-dfl src|dst`")  # fmt: skip
    fsub = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    sheet = fsub.add_parser(
        "sheet",
        parents=[common],
        help="contact sheet of the aligned faces",
        description="Write data_<side>/aligned_sheet_01.jpg …: thumbnails with file names.",
    )
    sheet.add_argument("side", choices=SIDES)
    sheet.add_argument("--columns", type=int_in(1, 50), default=10, help="thumbnails per row (default: 10)")
    sheet.add_argument("--thumb", type=int_in(32, 512), default=128, help="thumbnail size (default: 128)")
    sheet.add_argument(
        "--per-sheet", type=int_in(1, 5000), default=200, help="faces per sheet (default: 200)"
    )
    sheet.set_defaults(handler=cmd_sheet)
    convert = fsub.add_parser(
        "convert-dfl",
        parents=[common],
        help="rewrite DeepFaceLab aligned faces with facelab's metadata (labels and masks kept)",
        description="Move each DeepFaceLab aligned face's metadata (landmarks, XSeg polygons, applied XSeg "
        "mask) from its pickle into facelab's JSON, leaving the image data untouched. Originals go to "
        "aligned_dfl_backup/ first; a rerun continues where a killed one stopped.",
    )
    convert.add_argument("side", choices=SIDES)
    convert.add_argument("--dir", type=Path, help="convert this folder instead of data_<side>/aligned/")
    convert.add_argument("--no-backup", action="store_true", help="do not keep the originals")
    convert.set_defaults(handler=cmd_convert_dfl)


def _report_broken(fs) -> None:
    if fs.broken:
        first = fs.broken[0]
        say(f"skipped {len(fs.broken)} images without usable face metadata ({first[0].name}: {first[1]})")


def cmd_sort(args: argparse.Namespace) -> int:
    ws = workspace_from(args)
    folder = ws.aligned_dir(args.side)
    if args.dry_run:  # reads only
        return _sort(args, folder)
    with editing(folder, f"sort {args.side}"):
        return _sort(args, folder)


def _sort(args: argparse.Namespace, folder: Path) -> int:
    if args.restore_names:
        if args.dry_run:
            say(f"would restore {len(original_names(folder))} original names in {folder}")
            return 0
        say(f"restored {restore_names(folder)} original names in {folder}")
        return 0
    if not 0 <= args.trash_worst < 100:
        raise UsageError(f"--trash-worst must be from 0 to 100 (below), not {args.trash_worst:g}")
    method = args.by or prompts.ask_choice("sort method", "blur", SORT_METHODS)
    fs = load_faceset(folder)
    _report_broken(fs)
    descriptors = face_descriptors(fs.faces) if method == "identity" else None
    keep, trash = sort_faceset(fs.faces, method, target=args.target, descriptors=descriptors)
    if args.trash_worst:
        cut = len(keep) - int(round(len(keep) * args.trash_worst / 100))
        keep, trash = keep[:cut], trash + keep[cut:]
    if args.dry_run:
        say(f"would sort {len(keep)} faces by {method} and move {len(trash)} to {fs.trash_dir}")
        for i, f in enumerate(keep[:20]):
            say(f"  {f.path.name} -> {i:05d}{f.path.suffix.lower()}")
        for f in trash[:20]:
            say(f"  {f.path.name} -> {fs.trash_dir.name}/")
        return 0
    if trash:
        move_to_trash(fs, trash)
    rename_in_order(fs, keep)
    moved = f"; {len(trash)} moved to {fs.trash_dir}" if trash else ""
    say(f"sorted {len(keep)} faces by {method} in {folder}{moved}")
    say(f"undo the renaming with `facelab sort {args.side} --restore-names`")
    return 0


def cmd_filter(args: argparse.Namespace) -> int:
    ws = workspace_from(args)
    if not args.threshold > 0:
        raise UsageError(f"--threshold must be positive, not {args.threshold:g}")
    fs = load_faceset(ws.aligned_dir(args.side))
    _report_broken(fs)
    kept_faces, others = split_by_person(fs.faces, args.reference, args.threshold)
    kept = len(kept_faces)
    if args.dry_run:
        say(f"would keep {kept} faces of the person in {args.reference.name}, move {len(others)} to trash")
        return 0
    if others:
        with editing(fs.folder, f"filter {args.side}"):
            move_to_trash(fs, others)
    say(f"kept {kept} faces of the person in {args.reference.name}; moved {len(others)} to {fs.trash_dir}")
    return 0


def cmd_sheet(args: argparse.Namespace) -> int:
    ws = workspace_from(args)
    fs = load_faceset(ws.aligned_dir(args.side))
    _report_broken(fs)
    paths = write_sheets(fs, ws.frames_dir(args.side), args.columns, args.thumb, args.per_sheet)
    say(f"{len(fs.faces)} faces on {len(paths)} sheets: " + ", ".join(str(p) for p in paths))
    return 0


def cmd_convert_dfl(args: argparse.Namespace) -> int:
    folder = args.dir or workspace_from(args).aligned_dir(args.side)
    if not folder.is_dir():
        raise FacelabError(f"{folder} does not exist: point --dir at DeepFaceLab's aligned folder")
    done = convert_faceset(folder, backup=not args.no_backup)
    for name, why in done.damaged:
        say(f"  skipped {name}: {why}")
    say(f"converted {done.converted} faces in {folder} ({done.labelled} with XSeg labels, {done.masked} with "
        f"an applied XSeg mask); {done.already} already facelab's"
        + (f"; {len(done.damaged)} with damaged metadata left as they were" if done.damaged else "")
        + (f"; {len(done.no_metadata)} without face metadata" if done.no_metadata else "")
        + (f"; originals in {done.backup}" if done.backup and done.converted else ""))  # fmt: skip
    return 0
