"""Step 7: the merged frames back into `result.<ext>` at the dst video's frame rate and with its
sound, plus the lossless `result_mask.<ext>`. `facelab make-video` and `facelab run` both call
`make_video`, so both check the frames the same way."""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from facelab import locks
from facelab.errors import FacelabError
from facelab.fsutil import remove_stale_temps
from facelab.media.mark import make_mark, read_mark
from facelab.media.probe import VideoInfo, probe_video, read_video_record
from facelab.media.video import DEFAULT_BITRATE, VIDEO_FORMATS, Colour, collect_frames, encode_video
from facelab.options import Option
from facelab.progress import say
from facelab.workspace import Workspace, numbered_images

# The encoding settings of step 7, for the flags and the prompts.
OPTIONS = [
    Option("fmt", str, "mp4", "container and codec", choices=tuple(VIDEO_FORMATS), flags=("--format",)),
    Option("bitrate", float, float(DEFAULT_BITRATE), "video bitrate in Mbit/s for the lossy formats",
           range=(1.0, 1000.0)),
    Option("colour", str, "dst", "the colour matrix of the result: the dst video's own (the pixels the "
           "merge left alone look as they did), or bt709", choices=("dst", "bt709")),
    Option("mark", bool, True, "mark the videos as synthetic in their metadata (the merged frames' mark, "
           "with the model); --no-mark leaves it out", switch=True),
]  # fmt: skip
BY_NAME = {o.name: o for o in OPTIONS}


@dataclass
class VideoOptions:
    fmt: str = "mp4"
    bitrate: float = DEFAULT_BITRATE
    from_dir: Path | None = None  # any folder of numbered frames instead of merged/
    mask_from: Path | None = None  # mask frames (default: merged_mask/, unless from_dir is given)
    fps: Fraction | None = None  # default: the dst video's own
    audio: Path | None = None  # default: the dst video's sound
    no_audio: bool = False
    output: Path | None = None  # default: <workspace>/result.<ext>
    overwrite: bool = False
    mark: bool = True  # the synthetic mark in the container (media/mark.py)
    colour: str = "dst"  # the dst video's colour matrix and range, or "bt709"


def _dst_info(ws: Workspace) -> tuple[VideoInfo | None, int | None]:
    """The dst video's record from extract-frames (with the number of frames written),
    else a fresh probe of data_dst.*, else nothing."""
    record = read_video_record(ws.video_info_path("dst"))
    if record is not None:
        return record
    try:
        return probe_video(ws.find_video("dst")), None
    except FacelabError:
        return None, None


def _check_merged(ws: Workspace, merged: Path, dst_frames: int | None) -> None:
    """Every dst frame merged, or an error that says how to fill the first gap: merge it, or, when
    data_dst/ lacks that frame too, restore the dst frames first."""
    have = {n for n, _ in numbered_images(merged)}
    total = max(dst_frames or 0, max(have, default=0))
    gap = next((n for n in range(1, total + 1) if n not in have), None)
    if gap is None:
        return
    if any(n == gap for n, _ in numbered_images(ws.frames_dir("dst"))):
        fill = "run `facelab merge` to finish"
    else:
        fill = ("data_dst/ lacks that frame too: `facelab extract-frames dst --overwrite` restores the dst "
                "frames (the aligned faces stay), then `facelab merge`")  # fmt: skip
    raise FacelabError(f"frame {gap:05d} is missing in {merged}: {len(have)} of {total} dst frames "
                       f"merged; {fill}")


def make_video(ws: Workspace, opts: VideoOptions) -> Path:
    """Encode the result (and its mask video); returns the result's path. The merged frames are
    held meanwhile, so a merge cannot change them half-way through the encode."""
    if opts.from_dir is not None or not ws.merged_dir.is_dir():
        return _encode(ws, opts)  # (no merged/: _encode says to merge first)
    with locks.hold(ws.merged_dir, "make-video"):
        return _encode(ws, opts)


def _encode(ws: Workspace, opts: VideoOptions) -> Path:
    frames_dir = opts.from_dir or ws.merged_dir
    if not frames_dir.is_dir():
        hint = "run `facelab merge` first" if opts.from_dir is None else "check the path given to --from"
        raise FacelabError(f"{frames_dir} does not exist: {hint}")
    info, dst_frames = _dst_info(ws)
    if opts.from_dir is None:
        _check_merged(ws, frames_dir, dst_frames)
    frames = collect_frames(frames_dir, start=None if opts.from_dir else 1)
    if not frames:
        raise FacelabError(f"{frames_dir} holds no numbered frames (00001.png ...)")
    fps = opts.fps or (info.fps_fraction if info else None)
    if fps is None:
        raise FacelabError("no frame rate known: run `facelab extract-frames dst` first or pass --fps")
    audio = None
    if not opts.no_audio:
        if opts.audio is not None:
            if not opts.audio.exists():
                raise FacelabError(f"{opts.audio} does not exist: check the path given to --audio")
            audio = opts.audio
        elif info is not None and info.has_audio and Path(info.path).exists():
            audio = Path(info.path)

    ext = VIDEO_FORMATS[opts.fmt][0]
    out = opts.output or ws.root / f"result.{ext}"
    mask_out = out.with_name(f"{out.stem}_mask{out.suffix}")
    held = opts.from_dir is None  # make_video holds the merged frames: no other encode of these files runs
    if held:  # so any temporary file beside them is a killed encode's (MBs each)
        for path in (out, mask_out):
            remove_stale_temps(path, 0)
    if out.exists() and not opts.overwrite:
        raise FacelabError(f"{out} already exists: pass --overwrite to replace it")
    mark = (read_mark(frames[0]) or make_mark()) if opts.mark else None  # the model that made the frames
    colour = Colour.of(info) if info is not None and opts.colour == "dst" else Colour()

    # The mask video first: a result on disk then means both are whole (a kill between the two leaves
    # no result, and the next run makes both again).
    mask_dir = opts.mask_from or (None if opts.from_dir else ws.merged_mask_dir)
    if mask_dir is not None:
        masks = collect_frames(mask_dir, start=None if opts.mask_from else 1) if mask_dir.is_dir() else []
        if not masks:
            say(f"no mask frames in {mask_dir}: skipping the mask video")
        else:
            m = encode_video(masks, mask_out, fps, fmt=opts.fmt, lossless=True, overwrite=True,
                             label=mask_out.name, mark=mark, colour=colour)  # fmt: skip
            say(f"{m.frames} mask frames -> {mask_out} in {m.seconds:.1f} s")
    result = encode_video(frames, out, fps, fmt=opts.fmt, bitrate=opts.bitrate, audio_from=audio,
                          overwrite=True, label=out.name, mark=mark, colour=colour)  # fmt: skip
    sound = f"sound from {audio.name}" if audio else "no sound"
    say(f"{result.frames} frames at {float(fps):.3f} fps, {sound} -> {out} in {result.seconds:.1f} s")
    return out
