"""What a video holds: exact frame rate, frame count, size and audio, read with PyAV."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path

from facelab.errors import FacelabError
from facelab.fsutil import read_json

# Demuxers that open single images; a JPEG renamed to .mp4 opens with one of these.
_IMAGE_DEMUXERS = ("image2", "_pipe", "gif", "webp")
# ffmpeg's names of the colour matrices and ranges a stream may declare (AVColorSpace and
# AVColorRange, as PyAV reports them); a stream that declares none has None.
COLOR_SPACES = {1: "bt709", 5: "bt470bg", 6: "smpte170m", 7: "smpte240m", 9: "bt2020nc", 10: "bt2020c"}
COLOR_RANGES = {1: "tv", 2: "pc"}
UNKNOWN = "unknown"


@dataclass
class VideoInfo:
    path: str
    width: int
    height: int
    fps: str  # exact rational, e.g. "30000/1001"
    frame_count: int
    duration: float  # seconds, the container's (video or audio, whichever is longer)
    video_codec: str
    has_audio: bool
    audio_codec: str | None
    colorspace: str | None = None  # the YUV matrix the stream declares (COLOR_SPACES), None: none
    color_range: str | None = None  # "tv" (limited) or "pc" (full), None: not declared

    @property
    def fps_fraction(self) -> Fraction:
        return Fraction(self.fps)

    def to_json(self) -> dict:
        d = asdict(self)
        d["fps_float"] = float(self.fps_fraction)
        return d

    @classmethod
    def from_json(cls, d: dict) -> VideoInfo:
        """ValueError (or KeyError, TypeError) unless `d` holds every field, each of its type."""
        # Records written before the colour was kept lack it: UNKNOWN, not "declares none".
        optional = {"colorspace": UNKNOWN, "color_range": UNKNOWN}
        info = cls(**{k: d.get(k, optional[k]) if k in optional else d[k] for k in cls.__dataclass_fields__})
        kinds = {"path": str, "width": int, "height": int, "fps": str, "frame_count": int,
                 "duration": (int, float), "video_codec": str, "has_audio": bool,
                 "audio_codec": (str, type(None)), "colorspace": (str, type(None)),
                 "color_range": (str, type(None))}  # fmt: skip
        for name, kind in kinds.items():
            value = getattr(info, name)
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise ValueError(f"{name} is {value!r}")
        if info.width <= 0 or info.height <= 0 or info.frame_count < 0 or not info.fps_fraction > 0:
            raise ValueError("its size, frame count or frame rate is out of range")
        return info


def read_video_record(path: Path) -> tuple[VideoInfo, int] | None:
    """(video facts, frames written) as extract-frames recorded them in `path`; None if absent."""
    if not path.exists():
        return None
    try:
        record = read_json(path)
        return VideoInfo.from_json(record), int(record["frames_written"])
    except (OSError, ValueError, KeyError, TypeError, ZeroDivisionError) as exc:
        raise FacelabError(f"{path} is damaged ({exc}): run `facelab extract-frames` again") from exc


def probe_video(path: Path) -> VideoInfo:
    """Probe `path`, or raise a FacelabError saying why it is not a usable video."""
    import av

    if not path.exists():
        raise FacelabError(f"{path} does not exist: check the path")
    if path.is_dir():
        raise FacelabError(f"{path} is a folder, not a video file")
    if path.stat().st_size == 0:
        raise FacelabError(f"{path} is empty (0 bytes): copy the video again")
    try:
        container = av.open(str(path), metadata_errors="ignore")
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        raise FacelabError(
            f"{path} is not a readable video ({_short(exc)}): check the file, or re-encode it to mp4"
        ) from exc
    with container:
        fmt = container.format.name
        if any(tag in fmt for tag in _IMAGE_DEMUXERS):
            raise FacelabError(f"{path} is a still image ({fmt}), not a video: pass a video file")
        if not container.streams.video:
            raise FacelabError(f"{path} has no video stream (audio only?): pass a video file")
        vs = container.streams.video[0]
        rate = vs.average_rate or vs.guessed_rate or vs.base_rate
        if not rate or rate <= 0:
            raise FacelabError(f"{path} has no usable frame rate: re-encode it with a fixed frame rate")
        if not vs.codec_context.width or not vs.codec_context.height:
            raise FacelabError(f"{path} has a video stream with no picture size: the file is damaged")
        frames = vs.frames or _count_packets(container, vs)
        if frames <= 0:
            raise FacelabError(f"{path} has a video stream with no frames: the file is damaged")
        if container.duration:
            duration = container.duration / 1_000_000
        elif vs.duration and vs.time_base:
            duration = float(vs.duration * vs.time_base)
        else:
            duration = frames / float(rate)
        audio = container.streams.audio[0] if container.streams.audio else None
        return VideoInfo(
            path=str(path.resolve()),
            width=vs.codec_context.width,
            height=vs.codec_context.height,
            fps=f"{rate.numerator}/{rate.denominator}",
            frame_count=int(frames),
            duration=round(duration, 6),
            video_codec=vs.codec_context.name,
            has_audio=audio is not None,
            audio_codec=audio.codec_context.name if audio is not None else None,
            colorspace=COLOR_SPACES.get(int(vs.codec_context.colorspace or 0)),
            color_range=COLOR_RANGES.get(int(vs.codec_context.color_range or 0)),
        )


def _count_packets(container, stream) -> int:
    """Frame count for containers that do not store it (mkv, webm): count packets, no decoding."""
    count = 0
    for packet in container.demux(stream):
        if packet.size:
            count += 1
    container.seek(0)
    return count


def _short(exc: Exception) -> str:
    text = str(exc)
    if "] " in text:
        text = text.split("] ", 1)[1]
    return text.split(":")[0].strip() or type(exc).__name__
