"""Shared fixtures: synthetic clips made with the real ffmpeg, and the optional real media."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from facelab.media.ffmpeg import ffmpeg_exe

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MEDIA = SHARED / "media"


def make_clip(
    path: Path,
    seconds: float = 2.0,
    size: str = "320x240",
    rate: str = "25",
    audio: bool = True,
    video: bool = True,
) -> Path:
    """ffmpeg testsrc (and a sine tone) encoded to H.264/AAC."""
    cmd = [ffmpeg_exe(), "-v", "error", "-y"]
    if video:
        cmd += ["-f", "lavfi", "-i", f"testsrc=duration={seconds}:size={size}:rate={rate}"]
    if audio:
        cmd += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}"]
    if video:
        cmd += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    if audio:
        cmd += ["-c:a", "aac"]
    cmd += ["-movflags", "+faststart", str(path)]
    subprocess.run(cmd, check=True)
    return path


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    return make_clip(tmp_path / "clip.mp4")


@pytest.fixture
def media() -> Path:
    if not MEDIA.is_dir():
        pytest.skip(f"real face media not found at {MEDIA} (the project's shared/ folder is absent)")
    return MEDIA


def run_cli(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """Run the real `facelab` command in a subprocess, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "facelab", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
    )


def assert_clean_error(proc: subprocess.CompletedProcess, code: int, *words: str) -> None:
    """One-line error naming what is wrong, the right exit code, no traceback."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and "error" in ln]
    assert len(lines) == 1, proc.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture(scope="session")
def faces_ws(tmp_path_factory) -> Path:
    """A workspace with aligned faces from the real src_1.mp4 (10 fps) and dst_1.mp4 (every frame)."""
    if not MEDIA.is_dir():
        pytest.skip(f"real face media not found at {MEDIA} (the project's shared/ folder is absent)")
    ws = tmp_path_factory.mktemp("faces")
    for side, fps in (("src", ["--fps", "10"]), ("dst", [])):
        for args in (
            ["extract-frames", side, "--input", MEDIA / f"{side}_1.mp4", *fps],
            ["extract-faces", side, "--size", "256", "--no-debug-images"],
        ):
            proc = run_cli(*args, "-w", ws, "-q")
            assert proc.returncode == 0, proc.stderr
    return ws


@pytest.fixture
def train_ws(faces_ws: Path, tmp_path: Path) -> Path:
    """A private copy of `faces_ws`'s aligned faces, to train in and to damage."""
    ws = tmp_path / "ws"
    for side in ("src", "dst"):
        shutil.copytree(faces_ws / f"data_{side}" / "aligned", ws / f"data_{side}" / "aligned")
    return ws
