"""Every step on a disk that fills part-way, and on a workspace made read-only mid-run: one line
naming the disk's problem and the step, nothing partial left where the next run would take it as
complete, and the same result as an uninterrupted run once there is room again.

The workspace lives on a small tmpfs mounted for the test (root only: the CI runs as root), filled
with a spare file to the free space each case wants.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest

from facelab.faces import meta
from facelab.models.folder import ModelFolder
from tests.conftest import assert_clean_error, run_cli
from tests.kill_steps import digest

FULL = "the disk is full"


@pytest.fixture
def small_disk(tmp_path: Path):
    """mount(size_mb) -> a fresh tmpfs; all are unmounted after the test."""
    mounted = []

    def mount(size_mb: int) -> Path:
        where = tmp_path / f"disk{len(mounted)}"
        where.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mb}m", "tmpfs", str(where)],
                              capture_output=True, text=True)  # fmt: skip
        if proc.returncode:
            pytest.skip(f"cannot mount a small tmpfs here ({proc.stderr.strip()}): needs root, as in CI")
        mounted.append(where)
        return where

    yield mount
    for where in mounted:
        subprocess.run(["umount", "-l", str(where)], capture_output=True)


def fill(disk: Path, leave: int) -> Path:
    """A spare file that leaves `leave` bytes free on `disk`; delete it to make room again."""
    st = os.statvfs(disk)
    spare = disk / "spare"
    with open(spare, "wb") as f:
        os.posix_fallocate(f.fileno(), 0, max(0, st.f_bavail * st.f_frsize - leave))
    return spare


def hashes(folder: Path, pattern: str = "*") -> dict[str, str]:
    return {p.name: digest(p) for p in sorted(folder.glob(pattern)) if p.is_file()}


@pytest.fixture(scope="module")
def reference(step_inputs: Path) -> Path:
    """The uninterrupted run's frames and faces of a 2-second dst clip, on the ordinary disk."""
    return step_inputs / "faces"


@pytest.fixture(scope="module")
def short_dst(step_inputs: Path) -> Path:
    return step_inputs / "dst.mp4"


def test_extract_frames_on_a_full_disk_keeps_nothing_partial(short_dst: Path, reference: Path, small_disk):
    ws = small_disk(32) / "ws"
    spare = fill(ws.parent, 1 << 20)
    proc = run_cli("extract-frames", "dst", "--input", short_dst, "-w", ws)
    assert_clean_error(proc, 1, FULL, "facelab extract-frames")
    assert not list((ws / "data_dst").glob("*.png"))  # frames appear only when the whole video decoded
    spare.unlink()
    assert run_cli("extract-frames", "dst", "--input", short_dst, "-w", ws).returncode == 0
    assert hashes(ws / "data_dst", "*.png") == hashes(reference / "data_dst", "*.png")
    assert not [p for p in (ws / "data_dst").parent.iterdir() if p.name.startswith(".")]


def _faces_are_whole(folder: Path) -> None:
    for face in folder.glob("*.jpg"):
        assert cv2.imread(str(face)) is not None, face
        meta.read(face)


def test_extract_faces_on_a_full_disk_resumes_to_the_same_faces(reference: Path, small_disk):
    ws = small_disk(64) / "ws"
    shutil.copytree(reference / "data_dst", ws / "data_dst", ignore=shutil.ignore_patterns("aligned*"))
    shutil.copy(reference / "data_dst_video.json", ws)
    spare = fill(ws.parent, 600 << 10)
    proc = run_cli("extract-faces", "dst", "-w", ws)
    assert_clean_error(proc, 1, FULL, "facelab extract-faces")
    done = list((ws / "data_dst" / "aligned").glob("*.jpg"))
    assert 0 < len(done) < 50
    _faces_are_whole(ws / "data_dst" / "aligned")
    spare.unlink()
    proc = run_cli("extract-faces", "dst", "-w", ws)
    assert proc.returncode == 0, proc.stderr
    for sub in ("aligned", "aligned_debug"):
        assert hashes(ws / "data_dst" / sub, "*.jpg") == hashes(reference / "data_dst" / sub, "*.jpg"), sub


def test_a_workspace_made_read_only_mid_extraction(reference: Path, small_disk):
    """The faces folder turns read-only under a running extraction (a read-only file system mounted
    over it: remounting the workspace's own would wait for the files the step holds open)."""
    ws = small_disk(64) / "ws"
    shutil.copytree(reference / "data_dst", ws / "data_dst", ignore=shutil.ignore_patterns("aligned*"))
    shutil.copy(reference / "data_dst_video.json", ws)
    proc = subprocess.Popen([sys.executable, "-m", "facelab", "extract-faces", "dst", "-w", str(ws)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    aligned = ws / "data_dst" / "aligned"
    deadline = time.monotonic() + 120
    while len(list(aligned.glob("*.jpg"))) < 5 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(aligned)], check=True)
    try:
        out, err = proc.communicate(timeout=120)
    finally:
        subprocess.run(["umount", "-l", str(aligned)], check=True)
    assert_clean_error(subprocess.CompletedProcess(proc.args, proc.returncode, out, err), 1, "read-only",
                       "facelab extract-faces")  # fmt: skip
    _faces_are_whole(aligned)
    assert run_cli("extract-faces", "dst", "-w", ws).returncode == 0
    assert hashes(aligned, "*.jpg") == hashes(reference / "data_dst" / "aligned", "*.jpg")


def test_a_save_on_a_full_disk_keeps_the_previous_checkpoint(faces_ws: Path, tmp_path: Path, small_disk):
    """A small SAEHD saved at iteration 1; the save at iteration 2 meets a full disk: the model still
    loads at 1, and trains on to 2 once there is room."""
    small = ["resolution=64", "ae_dims=32", "e_dims=16", "d_dims=16", "d_mask_dims=16", "batch_size=2"]
    train = ["train", "--model", "saehd", "--name", "m", "--precision", "fp32", "--threads", "2",
             "--no-preview", *(a for o in small for a in ("--opt", o))]  # fmt: skip
    work = tmp_path / "ws"
    for side in ("src", "dst"):
        shutil.copytree(faces_ws / f"data_{side}" / "aligned", work / f"data_{side}" / "aligned")
    assert run_cli(*train, "--target-iter", "1", "-w", work).returncode == 0
    size = sum(p.stat().st_size for p in work.rglob("*") if p.is_file()) >> 20
    checkpoint = sum(p.stat().st_size for p in (work / "model" / "m_SAEHD").glob("*.safetensors"))
    ws = small_disk(size + 64) / "ws"
    shutil.copytree(work, ws)
    spare = fill(ws.parent, checkpoint // 2)  # room for half a checkpoint
    proc = run_cli(*train, "--target-iter", "2", "-w", ws)
    assert_clean_error(proc, 1, FULL, "facelab train")
    folder = ModelFolder.of(ws / "model", "m", "SAEHD")
    folder.recover()
    assert folder.load().state["iteration"] == 1
    spare.unlink()
    proc = run_cli(*train, "--target-iter", "2", "-w", ws)
    assert proc.returncode == 0, proc.stderr
    assert folder.load().state["iteration"] == 2


def test_merge_and_make_video_on_a_full_disk(step_inputs: Path, small_disk):
    """Merged frames already written stay whole and are kept; the video is never left half-written;
    with room again both finish, and the merged frames equal an uninterrupted merge's."""
    ref = step_inputs / "merged"
    size = sum(p.stat().st_size for p in ref.rglob("*") if p.is_file()) >> 20
    ws = small_disk(size + 64) / "ws"
    shutil.copytree(step_inputs / "faces", ws, ignore=shutil.ignore_patterns("merge_session.json"))
    spare = fill(ws.parent, 3 << 20)
    proc = run_cli("merge", "--model", "m", "-w", ws)
    assert_clean_error(proc, 1, FULL, "facelab merge")
    merged = ws / "data_dst" / "merged"
    assert 0 < len(list(merged.glob("*.png"))) < 50
    for frame in merged.glob("*.png"):
        assert cv2.imread(str(frame)) is not None, frame
    spare.unlink()
    assert run_cli("merge", "--model", "m", "-w", ws).returncode == 0
    for sub in ("merged", "merged_mask"):
        assert hashes(ws / "data_dst" / sub, "*.png") == hashes(ref / "data_dst" / sub, "*.png"), sub

    spare = fill(ws.parent, 200 << 10)
    proc = run_cli("make-video", "-w", ws)
    assert_clean_error(proc, 1, FULL, "facelab make-video")
    # The mask video is written first: a result on disk means both are whole, so none is left here.
    assert not (ws / "result.mp4").exists() and not list(ws.glob(".result*"))
    spare.unlink()
    assert run_cli("make-video", "-w", ws).returncode == 0
    assert cv2.VideoCapture(str(ws / "result.mp4")).get(cv2.CAP_PROP_FRAME_COUNT) == 50
