"""Metadata embedded in aligned face images: the one module that reads and writes it.

Our format is JSON: in a JPEG it sits in APP10 segments tagged `FACELAB\\0` (split across
segments if it ever exceeds one); in a PNG, in an iTXt chunk with keyword `facelab`.
DeepFaceLab's aligned JPEGs (a pickled dict in APP15) are read through a restricted
unpickler that can build only plain containers, numbers, strings and numpy arrays, so a
faceset from a stranger can never run code.
"""

from __future__ import annotations

import base64
import binascii
import json
import struct
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from facelab.dfl import pickles
from facelab.errors import FacelabError
from facelab.faces.align import canonical_face_type
from facelab.fsutil import parse_json

FORMAT_VERSION = 1
_JPEG_TAG = b"FACELAB\x00"
_JPEG_APP = 0xEA  # APP10; DeepFaceLab uses APP15 for its pickle
_DFL_APP = 0xEF
_PNG_KEY = b"facelab"
_MAX_SEGMENT = 65533 - len(_JPEG_TAG) - 2


class MetadataError(FacelabError, ValueError):
    """The file has no usable face metadata (missing, damaged or unsafe)."""


@dataclass
class Polygon:
    """An XSeg label: include or exclude, points in aligned-image pixels (float32-exact, as the
    reference stores them)."""

    include: bool
    points: np.ndarray  # (N, 2) float64

    def to_json(self) -> dict:
        return {"type": "include" if self.include else "exclude", "points": self.points.tolist()}

    @classmethod
    def from_json(cls, d: dict) -> Polygon:
        if d.get("type") not in ("include", "exclude"):
            raise ValueError(f"polygon type must be include or exclude, not {d.get('type')!r}")
        return cls(d["type"] == "include", _polygon_points(d["points"]))


def _polygon_points(v) -> np.ndarray:
    a = np.asarray(v, np.float32).astype(np.float64)
    if a.ndim != 2 or a.shape[1] != 2 or not np.isfinite(a).all():
        raise ValueError(f"polygon points must be N x 2 finite numbers, got shape {a.shape}")
    return a


@dataclass
class FaceMeta:
    face_type: str
    size: int
    landmarks: np.ndarray  # 68x2, aligned-image pixels
    source_filename: str
    source_rect: list[float]  # detector box in the frame: left, top, right, bottom
    source_landmarks: np.ndarray  # 68x2, frame pixels
    image_to_face_mat: np.ndarray  # 2x3, frame -> aligned image
    extra: dict = field(default_factory=dict)  # detector, source size, DFL fields we keep
    polygons: list[Polygon] = field(default_factory=list)  # XSeg labels, in the order stored
    xseg_mask: bytes | None = None  # an applied XSeg mask: an encoded PNG or JPEG image

    def to_json(self) -> dict:
        labels = {}
        if self.polygons:
            labels["polygons"] = [p.to_json() for p in self.polygons]
        if self.xseg_mask is not None:
            labels["xseg_mask"] = base64.b64encode(self.xseg_mask).decode()
        return labels | {
            "format": "facelab-aligned",
            "version": FORMAT_VERSION,
            "face_type": self.face_type,
            "size": self.size,
            "landmarks": np.round(self.landmarks, 3).tolist(),
            "source_filename": self.source_filename,
            "source_rect": [round(float(v), 2) for v in self.source_rect],
            "source_landmarks": np.round(self.source_landmarks, 3).tolist(),
            "image_to_face_mat": self.image_to_face_mat.tolist(),
            "extra": self.extra,
        }

    @classmethod
    def from_json(cls, d: dict) -> FaceMeta:
        try:
            return cls(
                face_type=canonical_face_type(str(d["face_type"])),
                size=int(d["size"]),
                landmarks=_points(d["landmarks"]),
                source_filename=str(d["source_filename"]),
                source_rect=[float(v) for v in d["source_rect"]],
                source_landmarks=_points(d["source_landmarks"]),
                image_to_face_mat=_mat(d["image_to_face_mat"]),
                extra=dict(d.get("extra") or {}),
                polygons=[Polygon.from_json(p) for p in d.get("polygons") or []],
                xseg_mask=base64.b64decode(d["xseg_mask"], validate=True) if d.get("xseg_mask") else None,
            )
        except (KeyError, TypeError, ValueError, binascii.Error) as exc:
            raise MetadataError(f"incomplete face metadata ({exc})") from exc


def _points(v) -> np.ndarray:
    a = np.asarray(v, np.float64)
    if a.shape != (68, 2) or not np.isfinite(a).all():
        raise ValueError(f"landmarks must be 68x2 finite numbers, got shape {a.shape}")
    return a


def _mat(v) -> np.ndarray:
    a = np.asarray(v, np.float64)
    if a.shape != (2, 3) or not np.isfinite(a).all():
        raise ValueError(f"image_to_face_mat must be 2x3, got shape {a.shape}")
    return a


# ---------------------------------------------------------------------------------------- encode


def embed(image_bytes: bytes, meta: FaceMeta) -> bytes:
    """Return the encoded JPEG or PNG with `meta` embedded (replacing any earlier metadata, a
    DeepFaceLab APP15 pickle included); the image data itself is untouched."""
    payload = json.dumps(meta.to_json(), separators=(",", ":")).encode()
    if image_bytes[:2] == b"\xff\xd8":
        return _jpeg_insert(image_bytes, payload)
    if image_bytes[:8] == b"\x89PNG\r\n\x1a\n":
        return _png_insert(image_bytes, payload)
    raise MetadataError("only JPEG and PNG images can carry face metadata")


def _jpeg_segments(data: bytes):
    """Yield (marker, start, end) for each segment before the image data."""
    i = 2
    while i + 4 <= len(data):
        if data[i] != 0xFF:
            raise MetadataError("damaged JPEG header")
        marker = data[i + 1]
        if marker == 0xDA:  # start of scan: header ends
            return
        length = struct.unpack(">H", data[i + 2 : i + 4])[0]
        yield marker, i, i + 2 + length
        i += 2 + length


def _jpeg_insert(data: bytes, payload: bytes) -> bytes:
    chunks = [payload[i : i + _MAX_SEGMENT] for i in range(0, len(payload), _MAX_SEGMENT)] or [b""]
    if len(chunks) > 255:
        raise MetadataError("face metadata too large for a JPEG")
    ours = b""
    for idx, chunk in enumerate(chunks):
        body = _JPEG_TAG + bytes([idx, len(chunks)]) + chunk
        ours += b"\xff" + bytes([_JPEG_APP]) + struct.pack(">H", len(body) + 2) + body
    # Drop our old segments; insert after the last APPn so the file stays a normal JFIF.
    kept, insert_at, header_end = [], 0, 2
    for marker, start, end in _jpeg_segments(data):
        header_end = end
        seg = data[start:end]
        if marker == _JPEG_APP and seg[4:].startswith(_JPEG_TAG) or marker == _DFL_APP:
            continue  # ours is replaced; DeepFaceLab's pickle is superseded by it
        kept.append(seg)
        if 0xE0 <= marker <= 0xEF:
            insert_at = len(kept)
    kept.insert(insert_at, ours)
    return b"\xff\xd8" + b"".join(kept) + data[header_end:]


def _jpeg_size(data: bytes) -> int:
    """Width of a JPEG from its start-of-frame segment (aligned faces are square)."""
    for marker, start, _ in _jpeg_segments(data):
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            return struct.unpack(">H", data[start + 7 : start + 9])[0]
    raise MetadataError("damaged JPEG: no frame header")


def _png_chunks(data: bytes):
    i = 8
    while i + 8 <= len(data):
        length, ctype = struct.unpack(">I4s", data[i : i + 8])
        yield ctype, i, i + 12 + length
        i += 12 + length


def _png_insert(data: bytes, payload: bytes) -> bytes:
    body = _PNG_KEY + b"\x00\x00\x00\x00\x00" + payload  # iTXt: key, NUL, no compression, lang, NUL, kw
    chunk = struct.pack(">I", len(body)) + b"iTXt" + body + struct.pack(">I", zlib.crc32(b"iTXt" + body))
    out = bytearray(data[:8])
    for ctype, start, end in _png_chunks(data):
        if ctype == b"iTXt" and data[start + 8 : start + 8 + len(_PNG_KEY) + 1] == _PNG_KEY + b"\x00":
            continue
        if ctype == b"IEND":
            out += chunk
        out += data[start:end]
    return bytes(out)


# ---------------------------------------------------------------------------------------- decode


def read(path: Path) -> FaceMeta:
    """The face metadata of an aligned image, ours or DeepFaceLab's; MetadataError if none."""
    try:
        with open(path, "rb") as f:
            head = f.read(256 * 1024)
            if len(head) == 256 * 1024 and not _header_complete(head):
                head += f.read()
    except OSError as exc:
        raise MetadataError(f"cannot read ({exc.strerror})") from exc
    return parse(head)


def _header_complete(data: bytes) -> bool:
    """Whether `data` holds every metadata segment: a JPEG's header up to its scan (a PNG keeps
    ours at the end, so never)."""
    if data[:2] != b"\xff\xd8":
        return False
    ends = [end for _, _, end in _jpeg_segments(data)]
    end = ends[-1] if ends else 2
    return end + 4 <= len(data) and data[end : end + 2] == b"\xff\xda"


def written_by(data: bytes) -> str | None:
    """"facelab" or "deepfacelab": whose metadata an aligned JPEG carries (None: neither)."""
    if data[:2] != b"\xff\xd8":
        return "facelab" if data[:8] == b"\x89PNG\r\n\x1a\n" and _PNG_KEY + b"\x00" in data else None
    found = None
    for marker, start, end in _jpeg_segments(data):
        if marker == _JPEG_APP and data[start + 4 : end].startswith(_JPEG_TAG):
            return "facelab"
        if marker == _DFL_APP:
            found = "deepfacelab"
    return found


def parse(data: bytes) -> FaceMeta:
    if data[:2] == b"\xff\xd8":
        ours, dfl = [], None
        for marker, start, end in _jpeg_segments(data):
            body = data[start + 4 : end]
            if marker == _JPEG_APP and body.startswith(_JPEG_TAG):
                ours.append((body[len(_JPEG_TAG)], body[len(_JPEG_TAG) + 2 :]))
            elif marker == _DFL_APP and dfl is None:
                dfl = body
        if ours:
            return _from_payload(b"".join(chunk for _, chunk in sorted(ours)))
        if dfl is not None:
            return from_dfl_dict(restricted_loads(dfl), _jpeg_size(data))
        raise MetadataError("no face metadata (not an aligned face?)")
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        for ctype, start, end in _png_chunks(data):
            body = data[start + 8 : end - 4]
            if ctype == b"iTXt" and body.startswith(_PNG_KEY + b"\x00"):
                return _from_payload(body[len(_PNG_KEY) + 5 :])
        raise MetadataError("no face metadata (not an aligned face?)")
    raise MetadataError("not a JPEG or PNG image")


def _from_payload(payload: bytes) -> FaceMeta:
    try:
        d = parse_json(payload)
    except ValueError as exc:
        raise MetadataError(f"damaged face metadata ({exc})") from exc
    if not isinstance(d, dict) or d.get("format") != "facelab-aligned":
        raise MetadataError("unknown face metadata format")
    version = d.get("version", 0)
    if not isinstance(version, int) or isinstance(version, bool):
        raise MetadataError(f"damaged face metadata (version {str(version)[:20]!r})")
    if version > FORMAT_VERSION:
        raise MetadataError(f"face metadata version {version} is newer than this facelab; upgrade")
    return FaceMeta.from_json(d)


# ------------------------------------------------------------------------------ DeepFaceLab files

def restricted_loads(data: bytes):
    try:
        return pickles.loads(data)
    except pickles.PickleError as exc:
        raise MetadataError(f"DeepFaceLab metadata: {exc}") from exc


def from_dfl_dict(d, size: int) -> FaceMeta:
    """Convert DeepFaceLab's DFLJPG dict to our metadata; DFL keeps the size only in the image."""
    if not isinstance(d, dict):
        raise MetadataError("DeepFaceLab metadata is not a dict")
    try:
        mat = _mat(d["image_to_face_mat"])
        landmarks = _points(d["landmarks"])
        extra = {"origin": "deepfacelab"}
        if "eyebrows_expand_mod" in d:
            extra["eyebrows_expand_mod"] = float(d["eyebrows_expand_mod"])
        return FaceMeta(
            face_type=canonical_face_type(str(d["face_type"])),
            size=int(size),
            landmarks=landmarks,
            source_filename=str(d.get("source_filename") or ""),
            source_rect=[float(v) for v in np.asarray(d.get("source_rect", [0, 0, 0, 0])).ravel()],
            source_landmarks=_points(d["source_landmarks"]),
            image_to_face_mat=mat,
            extra=extra,
            polygons=_dfl_polygons(d.get("seg_ie_polys")),
            xseg_mask=_dfl_mask(d.get("xseg_mask")),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise MetadataError(f"incomplete DeepFaceLab metadata ({exc})") from exc


def _dfl_polygons(v) -> list[Polygon]:
    """DFL's `seg_ie_polys`: {'polys': [{'type': 1|0, 'pts': (N, 2)}]}, or the older list of
    (type, pts) pairs. Type 1 is include, 0 exclude; the stored order is kept."""
    if v is None:
        return []
    polys = v.get("polys", []) if isinstance(v, dict) else v
    out = []
    for p in polys:
        kind, pts = (p["type"], p["pts"]) if isinstance(p, dict) else p
        if int(kind) not in (0, 1):
            raise ValueError(f"seg_ie_polys type {kind!r} is neither include (1) nor exclude (0)")
        out.append(Polygon(int(kind) == 1, _polygon_points(pts)))
    return out


def _dfl_mask(v) -> bytes | None:
    """DFL's `xseg_mask`: a uint8 array holding an encoded PNG or JPEG (1-D, or (N, 1))."""
    if v is None:
        return None
    a = np.asarray(v)
    if a.dtype != np.uint8:
        raise ValueError(f"xseg_mask must be encoded image bytes (uint8), not {a.dtype}")
    return a.tobytes()
