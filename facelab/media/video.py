"""Step 7: numbered frames back to a video, with the dst video's frame rate and sound."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

from facelab import progress
from facelab.errors import FacelabError, UsageError
from facelab.fsutil import atomic_path, remove_stale_temps
from facelab.media.ffmpeg import run_ffmpeg
from facelab.media.mark import metadata_args
from facelab.media.probe import UNKNOWN, VideoInfo, probe_video
from facelab.workspace import numbered_images

# name -> (extension, lossless)
VIDEO_FORMATS: dict[str, tuple[str, bool]] = {
    "mp4": ("mp4", False),
    "mp4-lossless": ("mp4", True),
    "mov-lossless": ("mov", True),
    "avi": ("avi", False),
}
DEFAULT_BITRATE = 16  # Mbit/s, the reference tool's default
PRESET = "veryfast"
AUDIO_BITRATE = "192k"
# swscale's matrix for each colour space a stream may declare; ffmpeg decodes a stream that
# declares none as BT.601, so such a dst's result is encoded (and declared) BT.601.
_MATRIX = {"bt709": "bt709", "smpte240m": "smpte240m", "bt2020nc": "bt2020", "bt2020c": "bt2020"}


@dataclass(frozen=True)
class Colour:
    """How the result's YUV maps to RGB: as the dst video's (`of`), so that every pixel the merge
    left alone decodes as it did in the dst (encoding dst_1, which declares nothing and so decodes
    as BT.601, in BT.709 cost 0.6 dB of PSNR outside the face). A dst that declares nothing gets a
    result that declares BT.601 limited range, what ffmpeg decoded it as; without a dst, BT.709."""

    space: str | None = "bt709"
    range: str | None = "tv"

    @classmethod
    def of(cls, info: VideoInfo) -> Colour:
        return cls() if info.colorspace == UNKNOWN else cls(info.colorspace, info.color_range)

    def filter(self) -> str:
        """Even size, then 4:2:0 in this matrix and range."""
        matrix, rng = _MATRIX.get(self.space or "", "bt601"), "pc" if self.range == "pc" else "tv"
        return f"pad=ceil(iw/2)*2:ceil(ih/2)*2,scale=out_color_matrix={matrix}:out_range={rng},format=yuv420p"

    def tags(self) -> list[str]:
        space = self.space or "smpte170m"
        tags = ["-color_range", self.range or "tv", "-colorspace", space]
        return tags + (["-color_primaries", "bt709", "-color_trc", "bt709"] if space == "bt709" else [])


@dataclass
class VideoResult:
    path: Path
    frames: int
    seconds: float
    with_audio: bool


def collect_frames(folder: Path, start: int | None = None) -> list[Path]:
    """The numbered frames in `folder`, checked for gaps and for one image type.

    `start` is the number the sequence must begin at (1 for merged dst frames);
    None accepts any start.
    """
    frames = numbered_images(folder)
    if not frames:
        return []
    exts = {p.suffix.lower().replace("jpeg", "jpg") for _, p in frames}
    if len(exts) > 1:
        raise FacelabError(f"{folder} mixes image types ({', '.join(sorted(exts))}): keep one type")
    expected = frames[0][0] if start is None else start
    for number, p in frames:
        if number != expected:
            width = len(p.stem)
            raise FacelabError(
                f"frame {expected:0{width}d} is missing in {folder} (the frames jump to {p.name}): "
                "re-run the step that writes it, or renumber the frames"
            )
        expected += 1
    return [p for _, p in frames]


def encode_video(
    frames: list[Path],
    out_path: Path,
    fps: Fraction,
    fmt: str = "mp4",
    bitrate: float = DEFAULT_BITRATE,
    audio_from: Path | None = None,
    lossless: bool | None = None,
    overwrite: bool = False,
    label: str = "video",
    mark: dict | None = None,
    colour: Colour | None = None,
) -> VideoResult:
    """Encode `frames` (all .png or all .jpg) to H.264 at `fps`; copy in `audio_from`'s first audio track."""
    if fmt not in VIDEO_FORMATS:
        raise UsageError(f"unknown video format {fmt!r}: use one of {', '.join(VIDEO_FORMATS)}")
    if not bitrate > 0:
        raise UsageError(f"--bitrate must be a positive number of Mbit/s, not {bitrate:g}")
    if fps <= 0:
        raise UsageError(f"frame rate must be positive, not {fps}")
    if not frames:
        raise FacelabError("no frames to encode")
    remove_stale_temps(out_path)  # what a killed encode of this file left (several MB each)
    if out_path.exists() and not overwrite:
        raise FacelabError(f"{out_path} already exists: pass --overwrite to replace it")
    lossless = VIDEO_FORMATS[fmt][1] if lossless is None else lossless
    image_codec = "png" if frames[0].suffix.lower() == ".png" else "mjpeg"

    args = ["-f", "image2pipe", "-framerate", f"{fps.numerator}/{fps.denominator}", "-c:v", image_codec]
    args += ["-i", "pipe:0"]
    if audio_from is not None:
        args += [
            "-i",
            str(audio_from),
            "-map",
            "0:v:0",
            "-map",
            "1:a:0",
            "-c:a",
            "aac",
            "-b:a",
            AUDIO_BITRATE,
        ]
    else:
        args += ["-map", "0:v:0"]
    colour = colour or Colour()
    args += ["-vf", colour.filter(), "-c:v", "libx264", "-preset", PRESET]
    args += ["-qp", "0"] if lossless else ["-b:v", f"{bitrate:g}M"]
    args += colour.tags() + metadata_args(mark, out_path.suffix)
    if out_path.suffix in (".mp4", ".mov"):  # MP4 keeps custom metadata keys only when told to
        args += ["-movflags", "+faststart" + ("+use_metadata_tags" if mark else "")]

    start = time.perf_counter()
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(out_path) as tmp, progress.bar(len(frames), f"encoding {label}") as pbar:
        run_ffmpeg(args + ["-y", str(tmp)], f"writing {out_path}", stdin_feed=_feeder(frames, pbar.update))
        made = probe_video(tmp)
        if made.frame_count != len(frames):
            raise FacelabError(f"{out_path}: ffmpeg wrote {made.frame_count} of {len(frames)} frames")
    return VideoResult(out_path, len(frames), time.perf_counter() - start, audio_from is not None)


def _feeder(frames: list[Path], advance: Callable[[int], object]) -> Callable[[object], None]:
    def feed(pipe) -> None:
        for p in frames:
            try:
                data = p.read_bytes()
            except OSError as exc:
                raise FacelabError(f"cannot read {p}: {exc.strerror}") from exc
            if not data:
                raise FacelabError(f"{p} is empty (0 bytes): re-create that frame")
            pipe.write(data)
            advance(1)

    return feed
