from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

import pytest

from facelab.cli import build_parser
from tests.conftest import on_a_terminal, run_cli

WORKFLOW = ["info", "workspace", "extract-frames", "extract-faces", "sort", "filter", "faceset", "xseg",
            "train", "models", "import-dfl", "export-dfl", "merge", "make-video", "eval", "inspect", "export",
            "live", "run", "ui", "demo"]  # fmt: skip
NESTED = {"workspace": ["init"], "faceset": ["sheet", "convert-dfl"],
          "xseg": ["train", "apply", "remove", "remove-labels", "fetch", "export", "labels"],
          "models": ["list", "rename", "delete", "restore"]}  # fmt: skip


def _subcommands(parser) -> dict:
    found = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return found[0].choices if found else {}


def test_help_lists_every_command_in_workflow_order():
    out = run_cli("--help").stdout.split("commands, in workflow order")[1]
    assert list(_subcommands(build_parser())) == WORKFLOW  # nothing missing, nothing extra
    positions = [re.search(rf"\n    {name}\s", out).start() for name in WORKFLOW]
    assert positions == sorted(positions)


def test_a_named_command_builds_only_its_part_of_the_parser():
    """REGISTRARS says who adds each command; a command line that names one imports only its module,
    so the commands that need no model start without torch."""
    from facelab.cli import REGISTRARS

    assert [n for _, _, names in REGISTRARS for n in names] == WORKFLOW
    for _, _, names in REGISTRARS:
        for name in names:
            assert list(_subcommands(build_parser(name))) == list(names), name
    code = ("import sys\nfrom facelab.cli import main\ntry:\n    main(sys.argv[1:])\nexcept SystemExit:\n"
            "    pass\nprint('torch' in sys.modules)")  # fmt: skip
    for cmd in (["extract-frames", "dst"], ["-w", "x", "make-video", "--help"], ["sort", "--help"],
                ["inspect", "--help"], ["train", "--help"]):  # fmt: skip
        proc = subprocess.run([sys.executable, "-c", code, *cmd], capture_output=True, text=True)
        assert proc.stdout.strip().endswith(str(cmd[-2] == "train")), (cmd, proc.stdout, proc.stderr)


def test_every_command_has_help_with_defaults():
    commands = _subcommands(build_parser())
    for name in WORKFLOW:
        assert list(_subcommands(commands[name])) == NESTED.get(name, []), name
        helps = [commands[name]] + list(_subcommands(commands[name]).values())
        for p in helps:
            text = p.format_help()
            assert text.startswith("usage: facelab " + name), text[:80]
            assert "--workspace" in text, p.prog
            # every option says what it does: no bare flag without a help line
            for action in p._actions:
                if action.option_strings and not isinstance(action, argparse._HelpAction):
                    assert action.help, f"{p.prog} {action.option_strings[0]} has no help"
    text = commands["make-video"].format_help()
    assert "default: 16" in text and "default: mp4" in text
    assert "default: png for dst, jpg for src" in " ".join(commands["extract-frames"].format_help().split())


@pytest.mark.parametrize("cmd", [["info"], ["extract-frames"], ["make-video"], ["demo"], ["workspace"],
                                 ["models", "restore"], ["train"], ["merge"]])  # fmt: skip
def test_help_exits_zero(cmd):
    proc = run_cli(*cmd, "--help")
    assert proc.returncode == 0 and proc.stdout.startswith(f"usage: facelab {' '.join(cmd)}")


def test_workspace_before_the_command(tmp_path: Path):
    ws = tmp_path / "ws"
    assert run_cli("-w", ws, "workspace", "init").returncode == 0
    assert (ws / "model").is_dir()
    listed = run_cli("-w", ws, "models", "list")
    assert listed.returncode == 0 and str(ws / "model") in listed.stdout
    both = run_cli("-w", ws, "models", "list", "-w", tmp_path / "other")
    assert both.returncode == 2 and "two workspaces" in both.stderr
    missing = run_cli("-w", tmp_path / "typo", "models", "list")
    assert missing.returncode == 1 and "does not exist" in missing.stderr


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
    assert "[0.0] frames per second to keep, 0 = every frame (0 to 240, ? for help)" in text
    assert "[jpg] frame image type (jpg, png, ? for help)" in text
    assert len(list((ws / "data_src").glob("*.jpg"))) == 50


def test_progress_and_errors_as_events_for_the_ui(tmp_path: Path, clip: Path):
    """What `facelab ui` reads of a job: JSON lines, not the terminal's text."""
    import json
    import os
    import subprocess
    import sys

    events = tmp_path / "events.jsonl"
    env = os.environ | {"FACELAB_EVENTS": str(events)}
    cmd = [sys.executable, "-m", "facelab", "extract-frames", "src", "--input", str(clip),
           "-w", str(tmp_path / "ws"), "--yes", "-q"]  # -q: a disabled bar still reports  # fmt: skip
    assert subprocess.run(cmd, env=env, capture_output=True).returncode == 0
    seen = [json.loads(line) for line in events.read_text().splitlines()]
    progress = [e for e in seen if e["event"] == "progress"]
    assert progress and progress[-1]["done"] == progress[-1]["total"] == 50
    assert seen[-1] == {"event": "end", "time": seen[-1]["time"], "code": 0}
    events.unlink()
    bad = [sys.executable, "-m", "facelab", "make-video", "-w", str(tmp_path / "empty")]
    assert subprocess.run(bad, env=env, capture_output=True).returncode == 1
    seen = [json.loads(line) for line in events.read_text().splitlines()]
    assert [e["event"] for e in seen] == ["error", "end"] and "does not exist" in seen[0]["message"]


def test_a_file_in_the_way_is_one_line_not_a_traceback(tmp_path: Path, clip: Path):
    from tests.conftest import assert_clean_error

    ws = tmp_path / "ws"
    assert run_cli("extract-frames", "src", "--input", clip, "-w", ws, "--yes", "-q").returncode == 0
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    proc = run_cli("make-video", "--from", ws / "data_src", "--fps", "25", "--output", blocker / "out.mp4",
                   "-w", ws, "--yes")  # fmt: skip
    assert_clean_error(proc, 1, "a file is in the way where a folder is needed")
    assert blocker.read_text() == "not a folder"
