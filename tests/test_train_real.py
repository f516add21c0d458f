"""Training on real faces from shared/media: it learns, resumes exactly, survives SIGKILL, and
refuses bad input with one clear line."""

from __future__ import annotations

import os
import pty
import resource
import select
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from facelab.faces import meta
from facelab.models.folder import BACKUPS, PREVIEW, WEIGHTS, ModelFolder
from facelab.train.recipes import recipe
from facelab.train.trainer import train
from facelab.workspace import Workspace
from tests.conftest import ARTIFACTS, assert_clean_error, run_cli
from tests.kill_harness import kill_cycles
from tests.train_tiny import tiny_options

HERE = Path(__file__).resolve().parent
Q96 = recipe("quick96")


def _tiny(ws: Path, name: str, target: int, **kw):
    return train(Workspace(ws), Q96, name, tiny_options(target, **kw))


def test_it_learns_on_real_faces(train_ws: Path):
    result = _tiny(train_ws, "learn", 300)
    src_drop = 1 - result.last_losses[0] / result.first_losses[0]
    dst_drop = 1 - result.last_losses[1] / result.first_losses[1]
    assert src_drop >= 0.30 and dst_drop >= 0.30, (result.first_losses, result.last_losses)
    assert result.data_share < 0.5
    ARTIFACTS.mkdir(exist_ok=True)
    shutil.copy(result.folder / PREVIEW, ARTIFACTS / "train_learns_preview.jpg")
    preview = cv2.imread(str(result.folder / PREVIEW))
    assert preview.shape[1] >= 5 * 64 and preview.shape[0] > 100 + 4 * 64  # header, graph, 4 rows


def test_resume_is_exact(train_ws: Path):
    straight = _tiny(train_ws, "straight", 24, preview=False)
    _tiny(train_ws, "split", 12, preview=False)  # stops where the next iteration is an unwarped repeat
    split = _tiny(train_ws, "split", 24, preview=False)
    assert straight.iteration == split.iteration == 24
    a = ModelFolder(straight.folder).load()
    b = ModelFolder(split.folder).load()
    for k, v in a.weights.items():
        assert torch.allclose(v, b.weights[k], atol=1e-6, rtol=0), k
    for k, v in a.optimizer.items():
        assert torch.allclose(v, b.optimizer[k], atol=1e-6, rtol=1e-5), k
    pa, pb = a.state["history"], b.state["history"]
    assert np.allclose(np.array(pa["buckets"]), np.array(pb["buckets"]), atol=1e-6)
    assert a.state["drawn"] == b.state["drawn"] and a.state["last_batch"] == b.state["last_batch"]


def test_sigkill_at_any_moment_is_survivable(train_ws: Path):
    stats = kill_cycles(train_ws, runs=8, seed=1)  # 200 with `tests/kill_harness.py WS --runs 200`
    assert stats["failures"] == [], stats["failures"]
    assert stats["loaded"] == 8 and stats["mid_save"] >= 2, stats
    assert stats["resumed"] >= 5, stats  # later runs continue from the iteration the last one saved
    result = _tiny(train_ws, "killed", stats["final_iteration"] + 3)
    assert result.iteration == stats["final_iteration"] + 3


def test_sigterm_saves_and_exits(train_ws: Path):
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "train_tiny.py"), str(train_ws), "term", str(10**9)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    for line in proc.stdout:
        if "saved at #1" in line:
            break
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    out = proc.stdout.read()
    assert proc.wait(timeout=60) == 0, out
    assert "stopped at iteration" in out and "saved" in out
    state = ModelFolder.of(train_ws / "model", "term", "Quick96").load().state
    assert state["iteration"] > 1


def test_keys_on_a_terminal(train_ws: Path):
    """s saves, b backs up, Enter saves and exits: through a real pseudo-terminal."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "train_tiny.py"), str(train_ws), "keys", str(10**9)],
        stdin=slave, stdout=slave, stderr=slave, close_fds=True,
    )  # fmt: skip
    os.close(slave)
    seen = b""

    def read_until(marker: bytes, timeout: float = 90) -> None:
        nonlocal seen
        deadline = time.time() + timeout
        while marker not in seen and time.time() < deadline:
            if select.select([master], [], [], 0.5)[0]:
                try:
                    seen += os.read(master, 4096)
                except OSError:
                    break
        assert marker in seen, seen.decode(errors="replace")[-2000:]

    read_until(b"saved at #1:")
    os.write(master, b"b")
    read_until(b"backup:")
    os.write(master, b"\r")
    read_until(b"done at iteration")
    assert proc.wait(timeout=60) == 0
    text = seen.decode(errors="replace")
    assert "Enter saves and exits" in text and "\r[" in text  # the status line is rewritten in place
    folder = ModelFolder.of(train_ws / "model", "keys", "Quick96")
    assert len(folder.backups()) == 1 and folder.load().state["iteration"] >= 2


# ------------------------------------------------------------------------------ the command


def test_train_resume_list_rename_reuse_delete(train_ws: Path):
    """The real Quick96 (38 M parameters) through `facelab train` and `facelab models`."""
    proc = run_cli("train", "--model", "quick96", "--name", "q", "--target-iter", "2", "-w", train_ws)
    assert proc.returncode == 0, proc.stderr
    assert "Starting Quick96 'q' at iteration 0: batch 4" in proc.stdout
    assert "reached the target (--target-iter 2) at iteration 2; saved" in proc.stdout
    folder = train_ws / "model" / "q_Quick96"
    assert {p.name for p in folder.iterdir()} >= {"config.json", "model.safetensors", "optimizer.safetensors",
                                                   "state.json", "preview.jpg", "summary.txt"}  # fmt: skip
    assert "38.3 M" in (folder / "summary.txt").read_text()
    for f in folder.iterdir():  # no pickle anywhere
        assert not f.read_bytes().startswith(b"\x80"), f
    proc = run_cli("train", "--model", "quick96", "--target-iter", "3", "--batch", "2", "-w", train_ws)
    assert proc.returncode == 0, proc.stderr
    assert "training the latest Quick96 model, 'q'" in proc.stdout
    assert "Resuming Quick96 'q' at iteration 2: batch 2" in proc.stdout
    listing = run_cli("models", "list", "-w", train_ws).stdout
    assert listing.splitlines()[1].split()[:5] == ["q", "Quick96", "3", "96", "full_face"]
    assert run_cli("models", "rename", "q", "base", "-w", train_ws).returncode == 0
    proc = run_cli("train", "--model", "quick96", "--name", "reused", "--from", "base", "--target-iter", "1",
                   "-w", train_ws)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "reused from:    base" in (train_ws / "model" / "reused_Quick96" / "summary.txt").read_text()
    assert_clean_error(run_cli("models", "delete", "base", "-w", train_ws), 2, "--yes")
    assert run_cli("models", "delete", "base", "--yes", "-w", train_ws).returncode == 0
    assert not (train_ws / "model" / "base_Quick96").exists()
    assert len(list((train_ws / "model" / "_trash").iterdir())) == 1
    assert [ln.split()[0] for ln in run_cli("models", "list", "-w", train_ws).stdout.splitlines()[1:]] == [
        "reused"
    ]


def test_out_of_memory_suggests_a_smaller_batch(train_ws: Path):
    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))

    proc = subprocess.run(
        [sys.executable, "-m", "facelab", "train", "--model", "quick96", "--name", "big", "--batch", "512",
         "--no-preview", "-w", str(train_ws)],
        capture_output=True, text=True, preexec_fn=limit,
    )  # fmt: skip
    assert_clean_error(proc, 1, "out of memory at batch size 512", "--batch 256")
    assert not (train_ws / "model" / "big_Quick96").exists()  # nothing half-made left behind


def test_faces_without_metadata_are_skipped_and_counted(train_ws: Path, capsys):
    plain = cv2.imencode(".jpg", np.full((64, 64, 3), 128, np.uint8))[1].tobytes()
    for i in range(3):
        (train_ws / "data_src" / "aligned" / f"plain_{i}.jpg").write_bytes(plain)
    _tiny(train_ws, "skips", 1, preview=False)
    assert "skipped 3 images without face metadata (e.g. plain_0.jpg)" in capsys.readouterr().out


def damage_scan(path: Path) -> None:
    """Zero a run of a JPEG's entropy-coded data (its metadata stays whole): libjpeg then reports
    `Corrupt JPEG data` and, through OpenCV, still returns a damaged picture."""
    data = bytearray(path.read_bytes())
    scan = data.rindex(b"\xff\xda")
    middle = scan + (len(data) - scan) // 2
    data[middle : middle + 64] = bytes(64)
    path.write_bytes(bytes(data))


def test_damaged_faces_are_skipped_counted_and_named(train_ws: Path, tmp_path: Path, capsys):
    from facelab.train.data import load_samples

    aligned = tmp_path / "aligned"
    shutil.copytree(train_ws / "data_src" / "aligned", aligned)
    faces = sorted(aligned.glob("*.jpg"))
    for p in faces[3:5]:
        damage_scan(p)
        meta.read(p)  # the metadata still reads: only the pixels are damaged
        assert cv2.imread(str(p)) is not None  # and OpenCV alone would have used them
    samples = load_samples(aligned, 64, "full_face", "Quick96", workers=1)
    assert len(samples) == len(faces) - 2 and faces[3].name not in samples.names
    out = capsys.readouterr().out
    assert f"skipped 2 damaged faces; the first: {faces[3]} is damaged (Corrupt JPEG data" in out
    ws = tmp_path / "sheet"
    shutil.copytree(aligned, ws / "data_src" / "aligned")
    sheet = run_cli("faceset", "sheet", "src", "-w", ws)
    assert sheet.returncode == 0, sheet.stderr
    assert "2 damaged faces left out of the sheet" in sheet.stdout


def test_bad_input_errors(train_ws: Path, tmp_path: Path):
    empty = tmp_path / "empty"
    proc = run_cli("train", "--model", "quick96", "--name", "x", "-w", empty)
    assert_clean_error(proc, 1, str(empty / "data_src" / "aligned"), "extract-faces")
    assert_clean_error(run_cli("train", "--model", "sae9", "-w", train_ws), 2, "invalid choice: 'sae9'")
    assert_clean_error(run_cli("train", "--model", "quick96", "--batch", "0", "-w", train_ws), 2, "--batch")
    assert_clean_error(
        run_cli("models", "rename", "nosuch", "y", "-w", train_ws), 1, "no model named 'nosuch'"
    )
    assert_clean_error(
        run_cli("train", "--model", "quick96", "--name", "../up", "-w", train_ws), 2, "model name"
    )


def test_wrong_face_type_is_refused(train_ws: Path):
    for p in sorted((train_ws / "data_dst" / "aligned").glob("*.jpg"))[:5]:
        m = meta.read(p)
        m.face_type = "half_face"
        data = p.read_bytes()
        p.write_bytes(meta.embed(data[:2] + data[2:], m))
    proc = run_cli("train", "--model", "quick96", "--name", "x", "-w", train_ws)
    assert_clean_error(proc, 1, "data_dst/aligned holds 5 half_face faces", "--face-type full")


def test_locked_model_is_refused(train_ws: Path):
    _tiny(train_ws, "busy", 1, preview=False)
    with ModelFolder.of(train_ws / "model", "busy", "Quick96").lock():
        proc = run_cli("train", "--model", "quick96", "--name", "busy", "-w", train_ws)
    assert_clean_error(proc, 1, "busy_Quick96 is in use by process", "stop that trainer first")


def test_damaged_checkpoint_offers_the_latest_autobackup(train_ws: Path):
    _tiny(train_ws, "dmg", 2, preview=False, autobackup_hour=1e-9)  # a backup at every save
    folder = ModelFolder.of(train_ws / "model", "dmg", "Quick96")
    assert (folder.path / BACKUPS / "01").is_dir()
    data = bytearray((folder.path / WEIGHTS).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (folder.path / WEIGHTS).write_bytes(bytes(data))
    proc = run_cli("train", "--model", "quick96", "--name", "dmg", "--target-iter", "3", "-w", train_ws)
    assert_clean_error(proc, 1, "model.safetensors is damaged", "autobackup is 01 (iteration 2)",
                       "facelab models restore dmg")  # fmt: skip
    assert run_cli("models", "restore", "dmg", "-w", train_ws).returncode == 0
    (folder.path / "optimizer.safetensors").unlink()
    proc = run_cli("train", "--model", "quick96", "--name", "dmg", "-w", train_ws)
    assert_clean_error(proc, 1, "optimizer.safetensors is missing", "models restore dmg")
    proc = run_cli("models", "restore", "dmg", "-w", train_ws)
    assert proc.returncode == 0 and "restored autobackup 01 (iteration 2)" in proc.stdout
    proc = run_cli("train", "--model", "quick96", "--name", "dmg", "--target-iter", "3", "-w", train_ws)
    assert proc.returncode == 0 and "Resuming Quick96 'dmg' at iteration 2" in proc.stdout, proc.stderr


def test_bf16_path_trains_with_fp32_losses(train_ws: Path):
    """bf16 autocast + channels_last (what auto picks with AMX or a bf16 GPU) runs anywhere, if slowly:
    the convolutions really run in bf16, the losses stay fp32."""
    from facelab.train.trainer import TrainingRun

    folder = ModelFolder.of(train_ws / "model", "hook", "Quick96")
    run = TrainingRun(Workspace(train_ws), recipe("quick96"), folder, tiny_options(1, precision="bf16"))
    seen = set()
    for conv in (m for m in run.model.modules() if isinstance(m, torch.nn.Conv2d)):
        conv.register_forward_hook(lambda _m, _i, out: seen.add(out.dtype))
    losses = run.train_step(run.next_batches())  # the losses themselves: test_train's dssim test
    assert seen == {torch.bfloat16} and all(np.isfinite(losses))

    result = _tiny(train_ws, "bf16", 3, precision="bf16", preview=False)
    state = ModelFolder(result.folder).load().state
    assert state["precision"] == "bf16" and all(np.isfinite(result.last_losses))


def test_terminal_model_picker_lists_newest_first(train_ws: Path):
    _tiny(train_ws, "older", 1, preview=False)
    time.sleep(1.1)
    _tiny(train_ws, "newer", 1, preview=False)
    master, slave = pty.openpty()
    cmd = [
        sys.executable,
        "-m",
        "facelab",
        "train",
        "--model",
        "quick96",
        "--target-iter",
        "1",
        "-w",
        str(train_ws),
    ]
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    seen = b""
    answered = False
    deadline = time.time() + 90
    while time.time() < deadline:
        if not select.select([master], [], [], 0.5)[0]:
            if proc.poll() is not None:
                break
            continue
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        seen += chunk
        if b"type a new name" in seen and not answered:
            os.write(master, b"1\n")  # the second in the list: the older model
            answered = True
    proc.wait(timeout=60)
    text = seen.decode(errors="replace")
    assert "[0] : newer - latest" in text and "[1] : older" in text and "[r] : rename" in text, text
    assert "[0] choose a model, or type a new name" in text
    assert (
        "is at iteration 1, which reaches the target (--target-iter 1)" in text and "older_Quick96" in text
    ), text
