"""Shared fixtures: synthetic clips made with the real ffmpeg, and the optional real media."""

from __future__ import annotations

import os
import pty
import select
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from facelab.media.ffmpeg import ffmpeg_exe

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
MEDIA = SHARED / "media"


def make_clip(
    path: Path,
    seconds: float = 2.0,
    size: str = "320x240",
    rate: str = "25",
    audio: bool = True,
    video: bool = True,
) -> Path:
    """ffmpeg testsrc (and a sine tone) encoded to H.264/AAC."""
    cmd = [ffmpeg_exe(), "-v", "error", "-y"]
    if video:
        cmd += ["-f", "lavfi", "-i", f"testsrc=duration={seconds}:size={size}:rate={rate}"]
    if audio:
        cmd += ["-f", "lavfi", "-i", f"sine=frequency=440:duration={seconds}"]
    if video:
        cmd += ["-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"]
    if audio:
        cmd += ["-c:a", "aac"]
    cmd += ["-movflags", "+faststart", str(path)]
    subprocess.run(cmd, check=True)
    return path


@pytest.fixture
def clip(tmp_path: Path) -> Path:
    return make_clip(tmp_path / "clip.mp4")


@pytest.fixture
def media() -> Path:
    if not MEDIA.is_dir():
        pytest.skip(f"real face media not found at {MEDIA} (the project's shared/ folder is absent)")
    return MEDIA


def run_cli(*args: str | Path, cwd: Path | None = None, env: dict | None = None
            ) -> subprocess.CompletedProcess:  # fmt: skip
    """Run the real `facelab` command in a subprocess, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "facelab", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
    )


def on_a_terminal(
    cmd: list[str],
    answers: dict[bytes, list[bytes]],
    timeout: float = 180,
    triggers: tuple[tuple[bytes, bytes], ...] = (),
) -> tuple[int, str]:
    """Run `cmd` on a pseudo-terminal and answer its prompts: a prompt (output ending in ": ") whose
    last line holds a key of `answers` gets that key's next reply, any other prompt Enter. Each
    (marker, reply) in `triggers` is sent once when the marker appears (for non-prompt waits).
    Returns the exit code and everything the terminal showed."""
    master, slave = pty.openpty()
    proc = subprocess.Popen(cmd, stdin=slave, stdout=slave, stderr=slave, close_fds=True)
    os.close(slave)
    seen, asked, fired = b"", {}, set()
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        if not select.select([master], [], [], 0.3)[0]:
            continue
        try:
            seen += os.read(master, 4096)
        except OSError:
            break
        for marker, reply in triggers:
            if marker in seen and marker not in fired:
                fired.add(marker)
                os.write(master, reply)
        if not seen.endswith(b": "):
            continue
        last = seen[seen.rfind(b"\n") + 1 :]
        key = next((k for k in answers if k in last), None)
        reply = b""
        if key is not None and asked.get(key, 0) < len(answers[key]):
            reply = answers[key][asked.get(key, 0)]
            asked[key] = asked.get(key, 0) + 1
        os.write(master, reply + b"\n")
        seen += b"\n"
    proc.wait(timeout=60)
    with_rest = seen
    while select.select([master], [], [], 0.1)[0]:
        try:
            chunk = os.read(master, 4096)
        except OSError:
            break
        if not chunk:
            break
        with_rest += chunk
    os.close(master)
    return proc.returncode, with_rest.decode(errors="replace")


def assert_clean_error(proc: subprocess.CompletedProcess, code: int, *words: str) -> None:
    """One-line error naming what is wrong, the right exit code, no traceback."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip() and "error" in ln]
    assert len(lines) == 1, proc.stderr
    for w in words:
        assert w in lines[0], (w, lines[0])


ARTIFACTS = REPO / "test-artifacts"


@pytest.fixture(scope="session")
def faces_ws(tmp_path_factory) -> Path:
    """A workspace with aligned faces from the real src_1.mp4 (10 fps) and dst_1.mp4 (every frame)."""
    if not MEDIA.is_dir():
        pytest.skip(f"real face media not found at {MEDIA} (the project's shared/ folder is absent)")
    ws = tmp_path_factory.mktemp("faces")
    for side, fps in (("src", ["--fps", "10"]), ("dst", [])):
        for args in (
            ["extract-frames", side, "--input", MEDIA / f"{side}_1.mp4", *fps],
            ["extract-faces", side, "--size", "256", "--no-debug-images"],
        ):
            proc = run_cli(*args, "-w", ws, "-q")
            assert proc.returncode == 0, proc.stderr
    return ws


@pytest.fixture(scope="session")
def step_inputs(tmp_path_factory) -> Path:
    """tests/kill_steps.py's inputs, built once: 2-second clips (src.mp4, dst.mp4), frames/ (dst
    frames), faces/ (+ dst faces, a tiny Quick96 `m` and a tiny XSeg `xseg`), merged/ (+ merged)."""
    from tests.kill_steps import DFL, build_inputs

    if not MEDIA.is_dir() or not DFL.is_dir():
        pytest.skip(f"real media and DeepFaceLab's files not found in {SHARED} (shared/ is absent)")
    return build_inputs(tmp_path_factory.mktemp("steps"))


@pytest.fixture
def train_ws(faces_ws: Path, tmp_path: Path) -> Path:
    """A private copy of `faces_ws`'s aligned faces, to train in and to damage."""
    ws = tmp_path / "ws"
    for side in ("src", "dst"):
        shutil.copytree(faces_ws / f"data_{side}" / "aligned", ws / f"data_{side}" / "aligned")
    return ws


@pytest.fixture(scope="session")
def trained_ws(faces_ws: Path, tmp_path_factory) -> Path:
    """faces_ws plus a tiny Quick96-layout model trained 300 iterations."""
    from facelab.train.recipes import recipe
    from facelab.train.trainer import train
    from facelab.workspace import Workspace
    from tests.train_tiny import tiny_options

    ws = tmp_path_factory.mktemp("trained") / "ws"
    shutil.copytree(faces_ws, ws)
    train(Workspace(ws), recipe("quick96"), "m", tiny_options(300, preview=False))
    return ws


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture
def page():
    if not CHROMIUM:
        if os.environ.get("FACELAB_REQUIRE_BROWSER"):  # set by .ci/run, which installs it
            pytest.fail("chromium is not installed")
        pytest.skip("Debian's chromium is not installed (apt install chromium); the CI installs it")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is missing (pip install .[dev])")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        pg = browser.new_page(viewport={"width": 1500, "height": 1000})
        pg.set_default_timeout(60_000)
        yield pg
        browser.close()
