"""The machine-readable mark that says a file is synthetic, and the optional visible label.

Every video and image facelab makes from a swap carries it unless `--no-mark` is given:
- videos: the container's `comment` ("synthetic: a face swap made with facelab") plus a `facelab`
  tag holding JSON (tool, version, model name, model kind, iteration, date), as ffmpeg metadata;
- PNG frames: the same two as tEXt chunks (`Comment`, `facelab`);
- JPEG frames: a COM segment holding the comment and the JSON.
`read_mark` reads any of them back (`facelab inspect FILE`).
"""

from __future__ import annotations

import json
import struct
import zlib
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np

from facelab import __version__
from facelab.fsutil import parse_json

COMMENT = "synthetic: a face swap made with facelab"
KEY = "facelab"
_JPEG_COM = 0xFE


def make_mark(model: str | None = None, kind: str | None = None, iteration: int | None = None) -> dict:
    date = datetime.now(UTC).isoformat(timespec="seconds")
    return {"tool": "facelab", "version": __version__, "synthetic": True, "model": model, "kind": kind,
            "iteration": iteration, "date": date}  # fmt: skip


def metadata_args(mark: dict | None, suffix: str = ".mp4") -> list[str]:
    """ffmpeg output options that write the mark into the container's metadata (an MP4 or MOV also
    needs `-movflags use_metadata_tags` for the `facelab` key). AVI keeps only its fixed tags, so
    there the JSON goes into the comment, after the sentence."""
    if mark is None:
        return []
    payload = json.dumps(mark, separators=(",", ":"))
    if suffix.lower() == ".avi":
        return ["-metadata", f"comment={COMMENT} {KEY}:{payload}"]
    return ["-metadata", f"comment={COMMENT}", "-metadata", f"{KEY}={payload}"]


def _png_text(key: str, text: str) -> bytes:
    body = key.encode("latin-1") + b"\x00" + text.encode("latin-1", "replace")
    return struct.pack(">I", len(body)) + b"tEXt" + body + struct.pack(">I", zlib.crc32(b"tEXt" + body))


def mark_image(data: bytes, mark: dict | None) -> bytes:
    """An encoded PNG or JPEG with the mark added after its header (the pixels are untouched)."""
    if mark is None:
        return data
    payload = json.dumps(mark, separators=(",", ":"))
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        ihdr_end = 8 + 12 + struct.unpack(">I", data[8:12])[0]
        return data[:ihdr_end] + _png_text("Comment", COMMENT) + _png_text(KEY, payload) + data[ihdr_end:]
    if data[:2] == b"\xff\xd8":
        body = f"{COMMENT}\n{KEY}:{payload}".encode()
        return data[:2] + b"\xff\xfe" + struct.pack(">H", len(body) + 2) + body + data[2:]
    raise ValueError("only PNG and JPEG images carry a mark")


def _from_text(text: str) -> dict | None:
    try:
        mark = parse_json(text)
    except ValueError:
        return None
    return mark if isinstance(mark, dict) and mark.get("tool") == "facelab" else None


def read_mark(path: Path) -> dict | None:
    """The mark in a PNG, JPEG or video file, or None."""
    with open(path, "rb") as f:
        head = f.read(8)
    if head == b"\x89PNG\r\n\x1a\n":
        data, i = path.read_bytes(), 8
        while i + 8 <= len(data):
            length, ctype = struct.unpack(">I4s", data[i : i + 8])
            if ctype == b"tEXt":
                key, _, text = data[i + 8 : i + 8 + length].partition(b"\x00")
                if key == KEY.encode():
                    return _from_text(text.decode("latin-1"))
            if ctype == b"IDAT":
                return None
            i += 12 + length
        return None
    if head[:2] == b"\xff\xd8":
        data, i = path.read_bytes(), 2
        while i + 4 <= len(data) and data[i] == 0xFF and data[i + 1] != 0xDA:
            length = struct.unpack(">H", data[i + 2 : i + 4])[0]
            if data[i + 1] == _JPEG_COM:
                body = data[i + 4 : i + 2 + length].decode("utf-8", "replace")
                for line in body.splitlines():
                    if line.startswith(f"{KEY}:"):
                        return _from_text(line[len(KEY) + 1 :])
            i += 2 + length
        return None
    import av

    try:
        with av.open(str(path)) as container:
            tags = dict(container.metadata)
    except (av.FFmpegError, OSError):
        return None
    if KEY in tags:
        return _from_text(tags[KEY])
    _, sep, payload = tags.get("comment", "").partition(f" {KEY}:")  # an AVI's
    return _from_text(payload) if sep else None


def watermark(image: np.ndarray, text: str) -> np.ndarray:
    """`text` in the bottom-right corner on a dark box, sized to the frame."""
    out = image.copy()
    h, w = out.shape[:2]
    scale = max(0.4, h / 1000)
    thick = max(1, round(scale * 2))
    (tw, th), base = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
    pad = round(8 * scale)
    x0, y0 = w - tw - 3 * pad, h - th - base - 3 * pad
    cv2.rectangle(out, (x0, y0), (w - pad, h - pad), (0, 0, 0), -1)
    origin = (x0 + pad, h - base - 2 * pad)
    cv2.putText(out, text, origin, cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), thick, cv2.LINE_AA)
    return out


class Stamp:
    """What a step puts on the frames it writes: the mark (None: `--no-mark`) and a visible label
    (None: none)."""

    def __init__(self, mark: dict | None, label: str | None = None):
        self.mark, self.label = mark, label

    def key(self) -> str:
        """For merge's record of how a frame was made: a change re-merges it."""
        return ("" if self.mark is not None else "|no-mark") + (f"|label={self.label}" if self.label else "")

    def draw(self, image: np.ndarray) -> np.ndarray:
        return watermark(image, self.label) if self.label else image

    def encoded(self, data: bytes) -> bytes:
        return mark_image(data, self.mark)
