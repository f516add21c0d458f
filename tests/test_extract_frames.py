from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import pytest

from facelab.workspace import numbered_images
from tests.conftest import assert_clean_error, make_clip, run_cli


def frames_in(folder: Path) -> list[str]:
    return [p.name for _, p in numbered_images(folder)]


def test_src_every_frame_jpg(tmp_path: Path, clip: Path):
    ws = tmp_path / "ws"
    proc = run_cli("extract-frames", "src", "--input", clip, "-w", ws, "--yes")
    assert proc.returncode == 0, proc.stderr
    names = frames_in(ws / "data_src")
    assert names[0] == "00001.jpg" and len(names) == 50  # 2 s at 25 fps
    assert "50 frames" in proc.stdout and " s " in proc.stdout  # count and time reported
    img = cv2.imread(str(ws / "data_src" / "00010.jpg"))
    assert img.shape == (240, 320, 3)


def test_src_fps_limit_and_png(tmp_path: Path):
    clip = make_clip(tmp_path / "c.mp4", seconds=3.0, rate="30")
    ws = tmp_path / "ws"
    proc = run_cli("extract-frames", "src", "--input", clip, "-w", ws, "--fps", "5", "--format", "png")
    assert proc.returncode == 0, proc.stderr
    names = frames_in(ws / "data_src")
    assert len(names) == 15 and all(n.endswith(".png") for n in names)


def test_dst_records_exact_video_facts(tmp_path: Path):
    ws = tmp_path / "ws"
    ws.mkdir()
    make_clip(ws / "data_dst.mov", seconds=2.0, rate="30000/1001")
    proc = run_cli("extract-frames", "dst", "-w", ws)
    assert proc.returncode == 0, proc.stderr
    info = json.loads((ws / "data_dst_video.json").read_text())
    assert info["fps"] == "30000/1001"
    assert info["frame_count"] == info["frames_written"] == len(frames_in(ws / "data_dst")) == 60
    assert info["width"] == 320 and info["height"] == 240 and info["has_audio"] is True


def test_dst_refuses_fps(tmp_path: Path, clip: Path):
    proc = run_cli("extract-frames", "dst", "--input", clip, "-w", tmp_path / "ws", "--fps", "5")
    assert_clean_error(proc, 2, "--fps", "dst")
    assert not (tmp_path / "ws" / "data_dst").exists()


@pytest.mark.parametrize("fps", ["-3", "nan", "500", "x"])
def test_bad_fps(tmp_path: Path, clip: Path, fps: str):
    proc = run_cli("extract-frames", "src", "--input", clip, "-w", tmp_path, f"--fps={fps}")
    assert_clean_error(proc, 2, "--fps", "0 to 240")


def test_fps_0_keeps_every_frame_as_the_prompt_says(tmp_path: Path, clip: Path):
    proc = run_cli("extract-frames", "src", "--input", clip, "-w", tmp_path, "--fps", "0")
    assert proc.returncode == 0, proc.stderr
    assert len(list((tmp_path / "data_src").glob("*.jpg"))) == 50


def test_unknown_format(tmp_path: Path, clip: Path):
    proc = run_cli("extract-frames", "src", "--input", clip, "-w", tmp_path, "--format", "gif")
    assert_clean_error(proc, 2, "--format", "gif")


def test_missing_input(tmp_path: Path):
    assert_clean_error(run_cli("extract-frames", "src", "-w", tmp_path), 1, "data_src.mp4", "--input")
    proc = run_cli("extract-frames", "src", "-w", tmp_path, "--input", tmp_path / "nope.mp4")
    assert_clean_error(proc, 1, "nope.mp4", "does not exist")


def test_text_file_is_not_a_video(tmp_path: Path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("this is not a video\n")
    assert_clean_error(
        run_cli("extract-frames", "src", "--input", bad, "-w", tmp_path / "ws"), 1, "notes.mp4"
    )


def test_jpeg_renamed_mp4(tmp_path: Path):
    img = tmp_path / "photo.jpg"
    cv2.imwrite(str(img), (cv2.getGaussianKernel(64, 10) @ cv2.getGaussianKernel(64, 10).T * 255 * 400))
    fake = tmp_path / "photo.mp4"
    img.rename(fake)
    proc = run_cli("extract-frames", "src", "--input", fake, "-w", tmp_path / "ws")
    assert_clean_error(proc, 1, "photo.mp4", "still image")


def test_truncated_mp4(tmp_path: Path):
    good = make_clip(tmp_path / "good.mp4", seconds=4.0)
    cut = tmp_path / "cut.mp4"
    data = good.read_bytes()
    cut.write_bytes(data[: len(data) * 6 // 10])
    ws = tmp_path / "ws"
    proc = run_cli("extract-frames", "dst", "--input", cut, "-w", ws)
    assert_clean_error(proc, 1, "cut.mp4", "truncated")
    assert frames_in(ws / "data_dst") == []  # nothing half-written is left behind
    assert not (ws / "data_dst_video.json").exists()


def test_audio_only(tmp_path: Path):
    audio = make_clip(tmp_path / "voice.m4a", video=False)
    proc = run_cli("extract-frames", "src", "--input", audio, "-w", tmp_path / "ws")
    assert_clean_error(proc, 1, "voice.m4a", "no video stream")


def test_unwritable_workspace(tmp_path: Path, clip: Path):
    if os.geteuid() == 0:
        # root ignores permission bits; /proc refuses new folders even for root.
        ws = Path("/proc/facelab-test-ws")
    else:
        ro = tmp_path / "ro"
        ro.mkdir()
        ro.chmod(0o555)
        ws = ro / "ws"
    proc = run_cli("extract-frames", "src", "--input", clip, "-w", ws)
    assert_clean_error(proc, 1, str(ws), "writable")


def test_existing_frames_refused_then_overwritten(tmp_path: Path, clip: Path):
    ws = tmp_path / "ws"
    (ws / "data_src" / "aligned").mkdir(parents=True)
    for i in range(1, 4):
        (ws / "data_src" / f"{i:05d}.jpg").write_bytes(b"user frame")
    (ws / "data_src" / "aligned" / "00001_0.jpg").write_bytes(b"aligned face")
    (ws / "data_src" / "notes.txt").write_text("mine")

    proc = run_cli("extract-frames", "src", "--input", clip, "-w", ws)
    assert_clean_error(proc, 1, "data_src", "--overwrite")
    assert (ws / "data_src" / "00002.jpg").read_bytes() == b"user frame"
    assert len(frames_in(ws / "data_src")) == 3

    proc = run_cli("extract-frames", "src", "--input", clip, "-w", ws, "--overwrite")
    assert proc.returncode == 0, proc.stderr
    assert "replaced 3" in proc.stdout
    assert len(frames_in(ws / "data_src")) == 50
    assert (ws / "data_src" / "00002.jpg").read_bytes() != b"user frame"
    assert (ws / "data_src" / "aligned" / "00001_0.jpg").read_bytes() == b"aligned face"
    assert (ws / "data_src" / "notes.txt").read_text() == "mine"


def test_debug_shows_traceback(tmp_path: Path):
    bad = tmp_path / "bad.mp4"
    bad.write_text("x")
    proc = run_cli("extract-frames", "src", "--input", bad, "-w", tmp_path, "--debug")
    assert proc.returncode == 1 and "Traceback" in proc.stderr


def test_workspace_video_by_stem(tmp_path: Path, clip: Path):
    ws = tmp_path / "ws"
    ws.mkdir()
    shutil.copy(clip, ws / "data_src.mkv")
    assert run_cli("extract-frames", "src", "-w", ws).returncode == 0
    shutil.copy(clip, ws / "data_src.mp4")
    assert_clean_error(run_cli("extract-frames", "src", "-w", ws, "--overwrite"), 1, "several")


def test_a_file_or_folder_where_the_other_belongs_is_named(tmp_path: Path, clip: Path):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "data_src.mp4").mkdir()  # a folder where the video belongs
    assert_clean_error(run_cli("extract-frames", "src", "-w", ws), 1, "data_src.mp4 is a folder, not a video")
    (ws / "data_src.mp4").rmdir()
    shutil.copy(clip, ws / "data_src.mp4")
    (ws / "data_src").write_text("a file where the frames folder belongs")
    assert_clean_error(run_cli("extract-frames", "src", "-w", ws), 1, "data_src is a file", "move it away")
    assert (ws / "data_src").read_text() == "a file where the frames folder belongs"
    assert_clean_error(run_cli("workspace", "init", ws), 1, "data_src is a file", "move it")
