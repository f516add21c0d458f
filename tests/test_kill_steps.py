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
