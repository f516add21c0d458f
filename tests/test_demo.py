from __future__ import annotations

from pathlib import Path

import pytest

from facelab.media.probe import probe_video
from tests.conftest import run_cli


@pytest.mark.slow
def test_demo_runs_the_whole_workflow(tmp_path: Path):
    ws = tmp_path / "demo"
    proc = run_cli("demo", "-w", ws, "-q", "--minutes", "0.2")
    assert proc.returncode == 0, proc.stderr
    result = probe_video(ws / "result.mp4")
    assert result.frame_count == 100 and result.has_audio
    assert probe_video(ws / "result_mask.mp4").frame_count == 100
    assert len(list((ws / "data_src" / "aligned").glob("*.jpg"))) >= 98  # a face in (nearly) every frame
    assert len(list((ws / "data_dst" / "aligned").glob("*.jpg"))) >= 98
    assert (ws / "model" / "demo_Quick96" / "preview.jpg").exists()
    assert str(ws / "result.mp4") in proc.stdout and "real swaps need hours" in proc.stdout
    # A second run finds every step done and only prints the summary.
    again = run_cli("demo", "-w", ws, "-q", "--minutes", "0.2")
    assert again.returncode == 0 and again.stdout.count("done in an earlier run") == 8, again.stdout
