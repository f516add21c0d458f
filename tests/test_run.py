"""`facelab run` on the real clips: killed during training, rerun, finished."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from facelab.media.probe import probe_video
from tests.conftest import assert_clean_error, run_cli


def test_run_resumes_after_a_kill_and_finishes(media: Path, tmp_path: Path):
    ws = tmp_path / "ws"
    args = ["run", "--src", media / "src_1.mp4", "--dst", media / "dst_1.mp4", "--iterations", "4", "-w", ws]
    proc = subprocess.Popen([sys.executable, "-m", "facelab", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    for line in proc.stdout:
        if "saved at #1" in line:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL
    assert not (ws / "result.mp4").exists()

    done = run_cli(*args)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    for step in (
        "1 extract src frames",
        "2 extract dst frames",
        "3 extract src faces",
        "4 extract dst faces",
    ):
        assert f"[{step}] done in an earlier run" in out
    assert "Resuming Quick96 'run' at iteration 1" in out
    assert "summary:" in out and "7 make video" in out and "faces in 125 frames" in out
    result = probe_video(ws / "result.mp4")
    assert result.frame_count == 125 and result.has_audio
    assert probe_video(ws / "result_mask.mp4").frame_count == 125
    assert len(list((ws / "data_dst" / "merged").glob("*.png"))) == 125

    other = run_cli("run", "--src", media / "src_2.mp4", "--dst", media / "dst_1.mp4", "-w", ws)
    assert_clean_error(other, 1, "holds a run of other videos", "--workspace")
    missing = run_cli(
        "run", "--src", tmp_path / "nope.mp4", "--dst", media / "dst_1.mp4", "-w", tmp_path / "w2"
    )
    assert_clean_error(missing, 1, "nope.mp4 does not exist")
