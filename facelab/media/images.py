"""Decoding image files strictly: a damaged image is an error, never a silently broken picture.

OpenCV's JPEG decoder prints `Corrupt JPEG data: ...` to stderr and returns whatever it managed
to decode (grey blocks, smeared rows), which would then be trained on. JPEGs are decoded with
simplejpeg's strict mode (the same libjpeg-turbo, pixel for pixel), which raises on such data
instead; other formats go through OpenCV, which returns None for data it cannot decode.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import simplejpeg

from facelab.errors import FacelabError


class DamagedImage(FacelabError):
    """The file is empty, unreadable or its image data is damaged."""


def decode_image(data: bytes, name: str | Path) -> np.ndarray:
    """BGR uint8 pixels of `data`, or DamagedImage naming `name` and what is wrong."""
    if not data:
        raise DamagedImage(f"{name} is empty (0 bytes): move it away or extract it again")
    if data[:2] == b"\xff\xd8":
        try:
            return np.ascontiguousarray(simplejpeg.decode_jpeg(data, colorspace="BGR", strict=True))
        except ValueError as exc:
            problem = str(exc)
        try:  # decodable when warnings are allowed: the data is corrupt
            simplejpeg.decode_jpeg(data, colorspace="BGR", strict=False)
        except ValueError:
            pass  # a kind simplejpeg does not decode (e.g. CMYK): OpenCV may
        else:
            raise DamagedImage(f"{name} is damaged ({problem}): move it away or extract it again")
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    if image is None:
        raise DamagedImage(f"{name} cannot be decoded (damaged or not an image): move it away")
    return image


def read_image(path: Path | str) -> np.ndarray:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise DamagedImage(f"{path} cannot be read ({exc.strerror})") from None
    return decode_image(data, path)
