"""`facelab run` on the real clips: killed during training, rerun, finished."""

from __future__ import annotations

import json
import math
import signal
import subprocess
import sys
from pathlib import Path

from facelab.media.probe import probe_video
from tests.conftest import ARTIFACTS, assert_clean_error, run_cli


def test_run_resumes_after_a_kill_and_finishes(media: Path, tmp_path: Path, page):
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
    _check_the_report(ws, out, page)

    other = run_cli("run", "--src", media / "src_2.mp4", "--dst", media / "dst_1.mp4", "-w", ws)
    assert_clean_error(other, 1, "holds a run of other videos", "--workspace")
    missing = run_cli(
        "run", "--src", tmp_path / "nope.mp4", "--dst", media / "dst_1.mp4", "-w", tmp_path / "w2"
    )
    assert_clean_error(missing, 1, "nope.mp4 does not exist")


def _check_the_report(ws: Path, out: str, page) -> None:
    """`run` ends with the quality report: finite figures for every scored frame, its readings in
    the summary, and a page that renders in Chromium without console errors."""
    assert "[8 quality report]" in out and "swap rate:" in out and "colour difference:" in out, out
    data = json.loads((ws / "report" / "report.json").read_text())
    (result,) = data["results"]
    faces = [f for f in result["frames"] if f["dst_face"]]
    assert len(result["frames"]) == 125 and len(faces) >= 120
    for key in ("src_distance", "nme", "seam", "delta_e", "sharpness", "background_psnr"):
        assert all(math.isfinite(f[key]) for f in faces), key
        assert math.isfinite(result["summary"][key]["mean"]), key
    errors = []
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto((ws / "report" / "index.html").as_uri())
    page.wait_for_load_state("load")
    assert page.locator("h1").inner_text() == "facelab eval"
    for img in page.locator("img").all():  # every picture loaded
        assert img.evaluate("i => i.complete && i.naturalWidth > 0"), img.get_attribute("src")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "eval_report.png"), full_page=True)
    assert errors == []
