"""Two steps on one workspace: a step that edits a faceset or the merged frames holds that folder,
and a second one is refused with a message naming the first; a killed holder never leaves it stuck."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from facelab.faces.extract import JOURNAL
from facelab.locks import Busy, hold
from tests.conftest import assert_clean_error, run_cli

HOLDER = "import sys, time\nfrom facelab.locks import hold\nwith hold(sys.argv[1], sys.argv[2]):\n" \
         "    print('held', flush=True)\n    time.sleep(600)\n"  # fmt: skip


def _holding(folder: Path, what: str) -> subprocess.Popen:
    cmd = [sys.executable, "-c", HOLDER, str(folder), what]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


def test_a_held_folder_is_refused_naming_its_holder_and_freed_when_the_holder_dies(tmp_path: Path):
    folder = tmp_path / "aligned"
    proc = _holding(folder, "sort src")
    try:
        with pytest.raises(Busy, match=rf"in use by `facelab sort src` \(process {proc.pid}, since"), \
                hold(folder, "extract-faces src"):  # fmt: skip
            pass
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    with hold(folder, "extract-faces src"):  # the kernel dropped the dead holder's lock
        pass


def test_make_video_is_refused_while_a_merge_holds_the_frames(tmp_path: Path):
    merged = tmp_path / "ws" / "data_dst" / "merged"
    proc = _holding(merged, "merge")
    try:
        assert_clean_error(run_cli("make-video", "-w", tmp_path / "ws"), 1, "in use by `facelab merge`")
    finally:
        proc.kill()
        proc.wait()


def test_sort_waits_for_an_extraction_of_the_same_faceset(tmp_path: Path, media: Path):
    ws = tmp_path / "ws"
    frames = run_cli("extract-frames", "src", "--input", media / "src_1.mp4", "-w", ws, "-q", "--yes")
    assert frames.returncode == 0, frames.stderr
    # One worker (no child processes), paused mid-run with SIGSTOP: the sort surely meets it.
    cmd = [sys.executable, "-m", "facelab", "extract-faces", "src", "-w", str(ws), "--yes", "-q",
           "--workers", "1"]  # fmt: skip
    extraction = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    journal = ws / "data_src" / "aligned" / JOURNAL
    deadline = time.time() + 120
    while time.time() < deadline and not (journal.exists() and '"frame"' in journal.read_text()):
        time.sleep(0.01)
    extraction.send_signal(signal.SIGSTOP)
    try:
        assert extraction.poll() is None, "the extraction ended before it could be paused"
        refused = run_cli("sort", "src", "--by", "blur", "-w", ws, "--yes")
    finally:
        extraction.send_signal(signal.SIGCONT)
    assert extraction.wait(timeout=300) == 0, extraction.stderr.read()
    assert_clean_error(refused, 1, "in use by `facelab extract-faces src`", "run this again")
    sorted_ = run_cli("sort", "src", "--by", "blur", "-w", ws, "--yes")
    assert sorted_.returncode == 0, sorted_.stderr


def test_two_merges_of_one_workspace(trained_ws: Path):
    merged = trained_ws / "data_dst" / "merged"
    proc = _holding(merged, "merge")
    try:
        assert_clean_error(run_cli("merge", "--model", "m", "-w", trained_ws), 1, "in use by `facelab merge`",
                           f"process {proc.pid}")  # fmt: skip
    finally:
        proc.kill()
        proc.wait()


def test_an_import_does_not_replace_a_model_in_training(tmp_path: Path):
    """`import-dfl --overwrite` of the name a trainer is training is refused, naming the trainer;
    once it stops, the import replaces the model (the old one goes to the trash)."""
    from tests.kill_steps import DFL

    if not DFL.is_dir():
        pytest.skip(f"DeepFaceLab's files not found at {DFL} (the shared/ folder is absent)")
    ws = tmp_path / "ws"
    assert run_cli("import-dfl", DFL / "model_tiny", "--name", "t", "-w", ws).returncode == 0
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom pathlib import Path\n"
                               "from facelab.models.folder import ModelFolder\n"
                               "with ModelFolder(Path(sys.argv[1])).lock():\n"
                               "    print('held', flush=True)\n    time.sleep(600)\n",
                               str(ws / "model" / "t_SAEHD")], stdout=subprocess.PIPE, text=True)  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        refused = run_cli("import-dfl", DFL / "model_tiny", "--name", "t", "--overwrite", "-w", ws)
        assert_clean_error(refused, 1, "being trained right now", f"process {holder.pid}")
    finally:
        holder.kill()
        holder.wait()
    assert run_cli("import-dfl", DFL / "model_tiny", "--name", "t", "--overwrite", "-w", ws).returncode == 0
    assert len(list((ws / "model" / "_trash").iterdir())) == 1


def test_a_ui_job_and_the_cli_on_one_faceset(step_inputs: Path, tmp_path: Path):
    """The page's extraction (a job) holds the faceset as the CLI's does: a CLI sort meanwhile is
    refused naming it; and a faceset the CLI holds is refused to the page, naming the CLI step."""
    import json
    import shutil

    from facelab import locks
    from tests.test_ui import Server

    ws = tmp_path / "ws"
    shutil.copytree(step_inputs / "frames", ws)
    aligned = ws / "data_dst" / "aligned"
    server = Server(ws)
    json_post = {"Content-Type": "application/json"}
    try:
        holder = _holding(aligned, "sort dst")
        try:
            code, answer = server.get("/api/faces/dst/extract", headers=json_post, data=b"{}")
            assert code in (400, 409) and "sort dst" in answer["error"], (code, answer)
        finally:
            holder.kill()
            holder.wait()
        code, answer = server.get("/api/faces/dst/extract", headers=json_post, data=json.dumps({}).encode())
        assert code == 200, answer

        deadline = time.time() + 60
        while not locks.holder(aligned) and time.time() < deadline:
            time.sleep(0.02)
        assert locks.holder(aligned), "the page's extraction never held the faceset"
        refused = run_cli("sort", "dst", "--by", "blur", "-w", ws)
        assert_clean_error(refused, 1, "in use by `facelab extract-faces dst`")
    finally:
        server.stop()
