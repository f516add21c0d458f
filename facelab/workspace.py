"""The workspace folder and its DeepFaceLab layout.

data_src.*  data_dst.*          input videos (any video extension)
data_src/  data_dst/            extracted frames 00001.jpg ...
data_*/aligned/                 aligned faces with embedded metadata
data_dst/aligned_debug/         debug images
model/                          models
data_dst/merged/ merged_mask/   merged frames and masks
result.mp4  result_mask.mp4
data_src_video.json ...         what was probed from each video (for make-video)
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from facelab.errors import FacelabError

Side = Literal["src", "dst"]
SIDES: tuple[Side, ...] = ("src", "dst")
IMAGE_EXTS = (".jpg", ".jpeg", ".png")
_NUMBERED = re.compile(r"^(\d+)$")


def default_workspace() -> Path:
    return Path(os.environ.get("FACELAB_WORKSPACE", "workspace"))


@dataclass(frozen=True)
class Workspace:
    root: Path

    def frames_dir(self, side: Side) -> Path:
        return self.root / f"data_{side}"

    def aligned_dir(self, side: Side) -> Path:
        return self.frames_dir(side) / "aligned"

    def aligned_debug_dir(self, side: Side) -> Path:
        return self.frames_dir(side) / "aligned_debug"

    def video_info_path(self, side: Side) -> Path:
        return self.root / f"data_{side}_video.json"

    @property
    def model_dir(self) -> Path:
        return self.root / "model"

    @property
    def merged_dir(self) -> Path:
        return self.frames_dir("dst") / "merged"

    @property
    def merged_mask_dir(self) -> Path:
        return self.frames_dir("dst") / "merged_mask"

    @property
    def result_video(self) -> Path:
        return self.root / "result.mp4"

    @property
    def report_dir(self) -> Path:
        """`facelab eval`'s report: index.html, its pictures and report.json."""
        return self.root / "report"

    def layout(self) -> list[Path]:
        return [
            self.frames_dir("src"),
            self.aligned_dir("src"),
            self.frames_dir("dst"),
            self.aligned_dir("dst"),
            self.model_dir,
        ]

    def init(self) -> list[Path]:
        """Create the layout; return the folders that were new."""
        if self.root.exists() and not self.root.is_dir():
            raise FacelabError(f"{self.root} is a file, not a folder: choose another --workspace")
        created = []
        for folder in self.layout():
            if folder.exists() and not folder.is_dir():
                raise FacelabError(f"{folder} is a file, but the workspace needs a folder there: move it")
            if not folder.is_dir():
                try:
                    folder.mkdir(parents=True, exist_ok=True)
                except OSError as exc:
                    raise FacelabError(
                        f"cannot create {folder}: {exc.strerror}; choose a writable --workspace"
                    ) from exc
                created.append(folder)
        return created

    def find_video(self, side: Side) -> Path:
        """The single `data_<side>.*` video in the workspace."""
        stem = f"data_{side}"
        candidates = sorted(p for p in self.root.glob(f"{stem}.*") if p.is_file())
        folders = sorted(p for p in self.root.glob(f"{stem}.*") if p.is_dir())
        if not candidates and folders:
            raise FacelabError(f"{folders[0]} is a folder, not a video: put the {side} video there as a file "
                               "(or pass --input PATH)")  # fmt: skip
        if not candidates:
            raise FacelabError(
                f"no {side} video: put {stem}.mp4 (any video extension) in {self.root} or pass --input PATH"
            )
        if len(candidates) > 1:
            names = ", ".join(p.name for p in candidates)
            raise FacelabError(
                f"several {side} videos in {self.root} ({names}): keep one or pass --input PATH"
            )
        return candidates[0]


def frame_number(name: str | Path) -> int | None:
    """The frame number of a file named by it (00001.jpg -> 1), else None."""
    m = _NUMBERED.match(Path(name).stem)
    return int(m.group(1)) if m else None


def image_files(folder: Path) -> list[Path]:
    """The images in `folder`, sorted by name; hidden files (a killed writer's `.name.xyz.tmp.jpg`,
    the system's own) are not images of the set."""
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTS and not p.name.startswith(".")
                  and p.is_file())  # fmt: skip


def numbered_images(folder: Path) -> list[tuple[int, Path]]:
    """Images named by frame number (00001.jpg ...), sorted by number."""
    frames = []
    for p in folder.iterdir() if folder.is_dir() else []:
        if p.suffix.lower() in IMAGE_EXTS and p.is_file():
            number = frame_number(p)
            if number is not None:
                frames.append((number, p))
    frames.sort()
    return frames
