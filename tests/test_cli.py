from __future__ import annotations

from pathlib import Path

import pytest

from facelab.cli import build_parser
from tests.conftest import on_a_terminal, run_cli


def test_help_lists_steps_in_workflow_order():
    out = run_cli("--help").stdout
    order = ["info", "workspace", "extract-frames", "make-video", "demo"]
    positions = [out.index(f"    {name}") for name in order]
    assert positions == sorted(positions)


def test_every_command_has_help_with_defaults():
    parser = build_parser()
    sub = next(a for a in parser._actions if a.dest == "command")
    for name, p in sub.choices.items():
        text = p.format_help()
        assert "--workspace" in text, name
    text = sub.choices["make-video"].format_help()
    assert "default: 16" in text and "default: mp4" in text
    assert "default: jpg" in sub.choices["extract-frames"].format_help()


@pytest.mark.parametrize("cmd", ["info", "extract-frames", "make-video", "demo", "workspace"])
def test_help_exits_zero(cmd):
    proc = run_cli(cmd, "--help")
    assert proc.returncode == 0 and "usage:" in proc.stdout


def test_workspace_init_creates_layout(tmp_path: Path):
    ws = tmp_path / "ws"
    proc = run_cli("workspace", "init", ws)
    assert proc.returncode == 0, proc.stderr
    for sub in ["data_src", "data_src/aligned", "data_dst", "data_dst/aligned", "model"]:
        assert (ws / sub).is_dir(), sub
    # A second init is harmless.
    assert run_cli("workspace", "init", ws).returncode == 0


def test_workspace_env_variable(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("FACELAB_WORKSPACE", str(tmp_path / "envws"))
    proc = run_cli("workspace", "init")
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "envws" / "model").is_dir()


def test_info_reports_what_a_bug_report_needs():
    proc = run_cli("info")
    assert proc.returncode == 0, proc.stderr
    for key in [
        "facelab",
        "python",
        "torch",
        "ffmpeg",
        "cpu features",
        "amx",
        "cuda",
        "face model landmarks68",
    ]:
        assert any(line.startswith(key) for line in proc.stdout.splitlines()), key
    assert "MISSING" not in proc.stdout


def test_no_command_prints_help():
    proc = run_cli()
    assert proc.returncode == 2 and "commands, in workflow order" in proc.stdout


def test_prompts_on_a_tty_show_default_and_range(tmp_path: Path, clip: Path):
    """On a terminal, extract-frames asks for fps and format; Enter takes the defaults."""
    import sys

    ws = tmp_path / "ws"
    cmd = [sys.executable, "-m", "facelab", "extract-frames", "src", "--input", str(clip), "-w", str(ws)]
    code, text = on_a_terminal(cmd, {}, timeout=60)
    assert code == 0, text
    assert "[0.0] frames per second to keep, 0 = every frame (0.0-240.0)" in text
    assert "[jpg] frame image type (jpg/png)" in text
    assert len(list((ws / "data_src").glob("*.jpg"))) == 50
