"""Every step on a disk that fills part-way, and on a workspace made read-only mid-run: one line
naming the disk's problem and the step, nothing partial left where the next run would take it as
complete, and the same result as an uninterrupted run once there is room again.

A full disk: the workspace lives on a small tmpfs mounted for the test (root only: the CI runs as
root), filled with a spare file to the free space each case wants. Read-only: the workspace lives on
an ext4 file system on a loop device, mounted with errors=remount-ro, and the test makes ext4 report
an error under the running step (its trigger_fs_error knob): the kernel turns the whole file system
read-only at once, open files included, as it does for a failing drive.
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
from facelab.models.folder import STAGING, ModelFolder
from tests.conftest import assert_clean_error, run_cli
from tests.kill_steps import digest

FULL = "the disk is full"
READ_ONLY = "the file system is read-only"


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


def small_saehd(*extra) -> list:
    """`facelab train` of a small SAEHD named m (a second an iteration here, checkpoints of 10 MB)."""
    small = ["resolution=64", "ae_dims=32", "e_dims=16", "d_dims=16", "d_mask_dims=16", "batch_size=2"]
    return ["train", "--model", "saehd", "--name", "m", "--precision", "fp32", "--threads", "2",
            "--no-preview", *extra, *(a for o in small for a in ("--opt", o))]  # fmt: skip


def test_a_save_on_a_full_disk_keeps_the_previous_checkpoint(faces_ws: Path, tmp_path: Path, small_disk):
    """A small SAEHD saved at iteration 1; the save at iteration 2 meets a full disk: the model still
    loads at 1, and trains on to 2 once there is room."""
    train = small_saehd()
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


class FailingDisk:
    """An ext4 file system that turns read-only on demand, as a failing drive does."""

    def __init__(self, image: Path, root: Path):
        self.image, self.root = image, root

    def mount(self) -> None:
        cmd = ["mount", "-o", "loop,errors=remount-ro", str(self.image), str(self.root)]
        subprocess.run(cmd, check=True, capture_output=True)

    def fail(self) -> None:
        """ext4 reports an error: with errors=remount-ro the kernel makes it read-only now."""
        dev = subprocess.run(["findmnt", "-n", "-o", "SOURCE", str(self.root)], capture_output=True,
                             text=True, check=True).stdout.strip()  # fmt: skip
        Path(f"/sys/fs/ext4/{Path(dev).name}/trigger_fs_error").write_text("facelab test")

    def repair(self) -> None:
        """The user's fix: unmount, check the file system, mount it writable again."""
        subprocess.run(["umount", str(self.root)], check=True)
        subprocess.run(["e2fsck", "-fy", str(self.image)], capture_output=True)  # 1: errors corrected
        self.mount()


@pytest.fixture
def failing_disk(tmp_path: Path):
    """A 1 GB (sparse) ext4 file system on a loop device; unmounted after the test."""
    image, root = tmp_path / "ext4.img", tmp_path / "disk"
    root.mkdir()
    with open(image, "wb") as f:
        f.truncate(1 << 30)
    if not shutil.which("mkfs.ext4") or subprocess.run(["mkfs.ext4", "-q", "-F", str(image)]).returncode:
        pytest.skip("mkfs.ext4 (e2fsprogs) is not installed")
    disk = FailingDisk(image, root)
    try:
        disk.mount()
    except subprocess.CalledProcessError as exc:
        pytest.skip(f"cannot mount an ext4 image on a loop device here ({exc.stderr.decode().strip()}): "
                    "needs root and loop devices, as in CI")  # fmt: skip
    dev = subprocess.run(["findmnt", "-n", "-o", "SOURCE", str(root)], capture_output=True, text=True)
    if not Path(f"/sys/fs/ext4/{Path(dev.stdout.strip()).name}/trigger_fs_error").exists():
        subprocess.run(["umount", str(root)])
        pytest.skip("this kernel's ext4 has no trigger_fs_error knob")
    yield disk
    subprocess.run(["umount", "-l", str(root)], capture_output=True)


def _fail_when(disk: FailingDisk, args: list, ready, timeout: float = 180) -> subprocess.CompletedProcess:
    """Run `facelab ARGS`, make the disk read-only once `ready()` holds, and return the finished run.
    What the test put on the disk is synced first: a file system that fails drops what it had not
    committed yet."""
    os.sync()
    proc = subprocess.Popen([sys.executable, "-m", "facelab", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + timeout
    while not ready() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.002)
    assert proc.poll() is None, f"the step ended before the disk failed: {proc.stderr.read()}"
    disk.fail()
    out, err = proc.communicate(timeout=timeout)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def _count(folder: Path, pattern: str, at_least: int):
    return lambda: len(list(folder.glob(pattern))) >= at_least


def test_extract_faces_on_a_disk_turning_read_only(reference: Path, failing_disk: FailingDisk):
    ws = failing_disk.root / "ws"
    shutil.copytree(reference / "data_dst", ws / "data_dst", ignore=shutil.ignore_patterns("aligned*"))
    shutil.copy(reference / "data_dst_video.json", ws)
    aligned = ws / "data_dst" / "aligned"
    proc = _fail_when(failing_disk, ["extract-faces", "dst", "-w", ws], _count(aligned, "*.jpg", 5))
    assert_clean_error(proc, 1, READ_ONLY, "facelab extract-faces")
    failing_disk.repair()
    _faces_are_whole(aligned)
    assert run_cli("extract-faces", "dst", "-w", ws).returncode == 0
    for sub in ("aligned", "aligned_debug"):
        assert hashes(ws / "data_dst" / sub, "*.jpg") == hashes(reference / "data_dst" / sub, "*.jpg"), sub


def test_training_on_a_disk_turning_read_only(faces_ws: Path, failing_disk: FailingDisk):
    """The disk fails in the middle of a save (one every 0.6 s): the save stops with one line, the
    last whole checkpoint loads, and training goes on from it once the disk is mended."""
    ws = failing_disk.root / "ws"
    for side in ("src", "dst"):
        shutil.copytree(faces_ws / f"data_{side}" / "aligned", ws / f"data_{side}" / "aligned")
    train = small_saehd("--save-every", "0.01", "-w", ws)
    assert run_cli(*train, "--target-iter", "1").returncode == 0
    folder = ModelFolder.of(ws / "model", "m", "SAEHD")
    proc = _fail_when(failing_disk, [*train, "--target-iter", "100000"], (folder.path / STAGING).exists)
    # The save's next write meets the read-only file system, or its fsync the I/O error of the
    # writes ext4 dropped when it failed: either way one line, naming the model's folder.
    assert_clean_error(proc, 1, "facelab train", "m_SAEHD")
    assert READ_ONLY in proc.stderr or "input/output error" in proc.stderr, proc.stderr
    failing_disk.repair()
    folder.recover()
    saved = folder.load().state["iteration"]
    assert saved >= 1
    assert run_cli(*train, "--target-iter", saved + 2).returncode == 0
    assert folder.load().state["iteration"] == saved + 2


def test_merge_and_make_video_on_a_disk_turning_read_only(step_inputs: Path, failing_disk: FailingDisk):
    ws = failing_disk.root / "ws"
    shutil.copytree(step_inputs / "faces", ws, ignore=shutil.ignore_patterns("merge_session.json"))
    merged = ws / "data_dst" / "merged"
    proc = _fail_when(failing_disk, ["merge", "--model", "m", "-w", ws], _count(merged, "*.png", 5))
    assert_clean_error(proc, 1, READ_ONLY, "facelab merge")
    failing_disk.repair()
    for frame in merged.glob("*.png"):
        assert cv2.imread(str(frame)) is not None, frame
    assert run_cli("merge", "--model", "m", "-w", ws).returncode == 0
    ref = step_inputs / "merged" / "data_dst"
    for sub in ("merged", "merged_mask"):
        assert hashes(ws / "data_dst" / sub, "*.png") == hashes(ref / sub, "*.png"), sub

    proc = _fail_when(failing_disk, ["make-video", "-w", ws], _count(ws, ".result*", 1))
    assert_clean_error(proc, 1, READ_ONLY, "facelab make-video")
    failing_disk.repair()
    assert not (ws / "result.mp4").exists()
    assert run_cli("make-video", "-w", ws).returncode == 0
    for video in ("result.mp4", "result_mask.mp4"):
        assert cv2.VideoCapture(str(ws / video)).get(cv2.CAP_PROP_FRAME_COUNT) == 50, video
    assert not list(ws.glob(".result*"))
