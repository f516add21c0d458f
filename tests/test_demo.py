from __future__ import annotations

from pathlib import Path

from facelab.media.probe import probe_video
from tests.conftest import run_cli


def test_demo_runs_what_exists(tmp_path: Path):
    ws = tmp_path / "demo"
    proc = run_cli("demo", "-w", ws, "-q")
    assert proc.returncode == 0, proc.stderr
    result = probe_video(ws / "result.mp4")
    assert result.frame_count == 100 and result.has_audio
    assert len(list((ws / "data_src" / "aligned").glob("*.jpg"))) >= 98  # a face in (nearly) every frame
    assert len(list((ws / "data_dst" / "aligned").glob("*.jpg"))) >= 98
    assert str(ws / "result.mp4") in proc.stdout and "not built yet" in proc.stdout
    # A second run reuses the clips and replaces its own outputs.
    assert run_cli("demo", "-w", ws, "-q").returncode == 0
