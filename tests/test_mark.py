"""Results are marked as synthetic: merged frames (PNG text chunks), every make-video format and
live's file output (container metadata) carry the mark, read back with the bundled ffmpeg, not
with facelab's own reader; `--no-mark` leaves it out; `--watermark` draws a visible label."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest

from facelab.media.ffmpeg import ffmpeg_exe
from facelab.media.mark import COMMENT
from facelab.media.video import VIDEO_FORMATS
from tests.conftest import run_cli


def ffmpeg_tags(path: Path) -> dict[str, str]:
    """What ffmpeg reads: a video's container metadata (as an ffmetadata file), or an image's
    frame metadata (PNG text chunks), as its metadata filter prints it."""
    image = path.suffix == ".png"
    out = ["-vf", "metadata=mode=print", "-f", "null", "-"] if image else ["-f", "ffmetadata", "-"]
    proc = subprocess.run([ffmpeg_exe(), "-v", "info", "-hide_banner", "-i", str(path), *out],
                          capture_output=True, text=True)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    tags = {}
    if image:  # "[Parsed_metadata_0 @ 0x...] key=value"
        printed = [line for line in proc.stderr.splitlines() if line.startswith("[Parsed_metadata")]
        lines = [line.split("] ", 1)[1] for line in printed]
    else:
        lines = [line for line in proc.stdout.splitlines() if not line.startswith(";")]
    for line in lines:
        key, sep, value = line.partition("=")
        if sep:
            tags[key.strip().lower()] = value
    return tags


def _facelab(tags: dict) -> dict | None:
    """The `facelab` tag's JSON; an AVI, which keeps only fixed tags, has it in the comment."""
    if "facelab" in tags:
        return json.loads(tags["facelab"])
    _, sep, payload = tags.get("comment", "").partition(" facelab:")
    return json.loads(payload) if sep else None


@pytest.fixture
def merged(trained_ws: Path, tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    shutil.copytree(trained_ws, ws, ignore=shutil.ignore_patterns("merged*", "*.mp4", "report"))
    proc = run_cli("merge", "--model", "m", "-w", ws, "-q")
    assert proc.returncode == 0, proc.stderr
    return ws


@pytest.mark.slow
def test_every_output_carries_the_mark_and_no_mark_leaves_it_out(merged: Path, media: Path):
    ws = merged
    frame = ws / "data_dst" / "merged" / "00001.png"
    mark = _facelab(ffmpeg_tags(frame))
    assert mark["tool"] == "facelab" and mark["synthetic"] is True
    assert mark["model"] == "m_Quick96" and mark["kind"] == "Quick96" and mark["iteration"] == 300
    assert ffmpeg_tags(frame)["comment"] == COMMENT
    assert _facelab(ffmpeg_tags(ws / "data_dst" / "merged_mask" / "00001.png")) == mark

    for fmt, (ext, _) in VIDEO_FORMATS.items():
        out = ws / f"out_{fmt}.{ext}"
        proc = run_cli("make-video", "--format", fmt, "-o", out, "-w", ws, "-q")
        assert proc.returncode == 0, proc.stderr
        for video in (out, out.with_name(f"{out.stem}_mask{out.suffix}")):
            tags = ffmpeg_tags(video)
            assert tags.get("comment", "").startswith(COMMENT) and _facelab(tags) == mark, (fmt, tags)
        shown = run_cli("inspect", out, "-w", ws)
        assert shown.returncode == 0 and '"model": "m_Quick96"' in shown.stdout, shown.stdout

    plain = ws / "plain.mp4"
    assert run_cli("make-video", "--no-mark", "-o", plain, "-w", ws, "-q").returncode == 0
    assert "facelab" not in ffmpeg_tags(plain) and "comment" not in ffmpeg_tags(plain)
    assert run_cli("inspect", plain, "-w", ws).returncode == 1

    # --no-mark on merge: the frames are made again, without it (the record says how they were made).
    proc = run_cli("merge", "--model", "m", "--no-mark", "-w", ws, "-q")
    assert proc.returncode == 0 and "merged 125 frames" in proc.stdout, proc.stdout
    assert "facelab" not in ffmpeg_tags(frame)

    # Live's file output.
    live = ws / "live.mp4"
    proc = run_cli("live", "--model", "m", "--input", media / "dst_1.mp4", "--output", live, "-w", ws, "-q")
    assert proc.returncode == 0, proc.stderr
    assert _facelab(ffmpeg_tags(live))["model"] == "m_Quick96"


@pytest.mark.slow
def test_watermark_draws_a_label_in_the_corner(merged: Path):
    ws = merged
    frame = ws / "data_dst" / "merged" / "00001.png"
    before = cv2.imread(str(frame))
    proc = run_cli("merge", "--model", "m", "--watermark", "--frames", "1-1", "-w", ws, "-q")
    assert proc.returncode == 0 and "merged 1 frames" in proc.stdout, proc.stdout
    after = cv2.imread(str(frame))
    h, w = after.shape[:2]
    corner = (slice(h - h // 10, h), slice(w - w // 3, w))
    changed = np.abs(after.astype(int) - before)[corner].sum(2) > 30
    assert changed.mean() > 0.2  # the dark box and its text
    assert np.array_equal(after[: h // 2], before[: h // 2])  # nothing else
