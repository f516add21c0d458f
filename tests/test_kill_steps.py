"""SIGKILL across every long step (tests/kill_steps.py): 5 kills at random moments of each step,
then a run to the end, whose outputs must equal an uninterrupted run's (by hash, or by pixels for
merged frames, whose mark holds a date; by frame count for encoded video). Training has its own
kill test (test_train_real.py); `tests/kill_harness.py --step STEP --runs 200` runs more."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.kill_steps import STEPS, kill_rounds

KILLS = 5


@pytest.fixture(scope="module")
def work(step_inputs: Path) -> Path:
    return step_inputs.parent  # kill_rounds finds the inputs there


# `run` is these steps one after another with a record of the ones done; its kill-and-resume is
# test_run.py's, and `kill_harness.py --step run` kills it here too (a round costs about 2 minutes).
@pytest.mark.parametrize("step", [s for s in STEPS if s != "run"])
def test_a_step_killed_five_times_finishes_as_if_never_killed(work: Path, step: str):
    stats = kill_rounds(step, work, KILLS, seed=1)
    assert stats["failures"] == [], stats
    assert stats["kills"] == KILLS and stats["matched"] == 1, stats


@pytest.mark.parametrize("step", [["extract-faces", "dst"], ["sort", "dst", "--by", "blur"],
                                  ["xseg", "apply", "dst", "--model", "xseg"],
                                  ["faceset", "convert-dfl", "dst"]])  # fmt: skip
def test_a_faceset_step_clears_what_a_killed_one_was_writing(step_inputs: Path, tmp_path: Path, step: list):
    """A kill in the middle of a face's or a debug image's atomic write leaves its temp file (found
    by the kill test of `xseg apply`); the next step that holds the faceset removes them."""
    import shutil

    from facelab.faces.faceset import load_faceset
    from tests.conftest import run_cli

    ws = tmp_path / "ws"
    shutil.copytree(step_inputs / "faces", ws)
    left = [ws / "data_dst" / "aligned" / ".00007_0.k1ll3d.tmp.jpg"]
    if step[0] == "extract-faces":
        left.append(ws / "data_dst" / "aligned_debug" / ".00015.wkhu8ic.tmp.jpg")
    if step[0] == "faceset":  # a kill while the original was copied to the backup folder
        (ws / "data_dst" / "aligned_dfl_backup").mkdir()
        left.append(ws / "data_dst" / "aligned_dfl_backup" / ".00070_0.a1uo6uf_.tmp.jpg")
    for p in left:
        p.write_bytes(b"half a JPEG")
    aligned = ws / "data_dst" / "aligned"
    whole = aligned / ".00008_0.wh0le.tmp.jpg"  # killed between the write and the rename
    shutil.copy(sorted(aligned.glob("*.jpg"))[0], whole)
    faceset = load_faceset(aligned)  # a temp file is not a face of the set, whole or not
    assert whole not in [f.path for f in faceset.faces] and not faceset.broken
    left.append(whole)
    proc = run_cli(*step, "-w", ws)
    assert proc.returncode == 0, proc.stderr
    assert not any(p.exists() for p in left)


def _in_session(sid: int) -> list[int]:
    """Running processes of session `sid` (a process started with start_new_session and all it
    started); not zombies, which have ended and wait for init to reap them."""
    pids = []
    for proc in (p for p in Path("/proc").iterdir() if p.name.isdigit()):
        try:
            state, _, _, session = (proc / "stat").read_text().rsplit(")", 1)[1].split()[:4]
            if state != "Z" and int(session) == sid:
                pids.append(int(proc.name))
        except (OSError, ValueError, IndexError):  # it ended while we looked
            continue
    return pids


def _kill_when(cmd: list[str], ready, wait_s: float) -> tuple[int, list[int]]:
    """Run `cmd` in a session of its own, SIGKILL it once `ready()`: how many processes the session
    had then, and the ones still running `wait_s` later."""
    import signal
    import subprocess
    import time

    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.monotonic() + 120
    while not ready():
        assert proc.poll() is None and time.monotonic() < deadline, f"{cmd[3]} ended before it was ready"
        time.sleep(0.02)
    had = len(_in_session(proc.pid))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + wait_s
    while _in_session(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return had, _in_session(proc.pid)


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs Linux's /proc")
def test_extraction_workers_end_with_a_killed_extraction(faces_ws: Path, tmp_path: Path):
    """Workers left running by a killed extract-faces went on writing faces beside the rerun (dst_1's
    125 frames: two segments, so two workers)."""
    import shutil
    import sys

    ws = tmp_path / "orphans"
    shutil.copytree(faces_ws / "data_dst", ws / "data_dst", ignore=shutil.ignore_patterns("aligned*"))
    cmd = [sys.executable, "-m", "facelab", "extract-faces", "dst", "--workers", "2", "-w", str(ws), "-q"]
    journal = ws / "data_dst" / "aligned" / ".extract.jsonl"
    # a worker left to finish its segment takes seconds more
    had, left = _kill_when(cmd, lambda: journal.exists() and '"frame"' in journal.read_text(), 1.5)
    assert had >= 3, "the extraction ran without its 2 worker processes"
    assert left == []


def test_a_merge_clears_the_session_file_a_killed_one_was_writing(step_inputs: Path, tmp_path: Path):
    """Found by the kill harness (merge, 1 round of 20): a kill while merge_session.json was being
    saved left its temp file in the model folder for good."""
    import os
    import shutil
    import time

    from tests.conftest import run_cli

    ws = tmp_path / "ws"
    shutil.copytree(step_inputs / "faces", ws)
    left = ws / "model" / "m_Quick96" / ".merge_session.6taxh2a7.tmp.json"
    left.write_text('{"format": "facelab-merge-sess')
    os.utime(left, (time.time() - 5, time.time() - 5))
    proc = run_cli("merge", "--model", "m", "--frames", "1-3", "-w", ws, "-q")
    assert proc.returncode == 0, proc.stderr
    assert not left.exists()


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs Linux's /proc")
def test_a_killed_merge_leaves_no_blend_process(step_inputs: Path, tmp_path: Path):
    """The blend workers are the forkserver's children, and each holds the forkserver's liveness
    pipe: a SIGKILLed merge left its forkserver and idle workers running for good (3 processes a
    kill, a few dozen after a kill harness run)."""
    import shutil
    import sys

    ws = tmp_path / "ws"
    shutil.copytree(step_inputs / "faces", ws)
    cmd = [sys.executable, "-m", "facelab", "merge", "--model", "m", "--workers", "2", "-w", str(ws), "-q"]
    merged = ws / "data_dst" / "merged"
    had, left = _kill_when(cmd, lambda: any(merged.glob("*.png")), 3)  # a frame: the workers are blending
    assert had >= 4, "the merge ran without its forkserver and 2 workers"
    assert left == []
