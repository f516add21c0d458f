"""A model folder written by an earlier facelab still loads, resumes and merges (tests/fixtures/models_v1)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli

FIXTURE = REPO / "tests" / "fixtures" / "models_v1" / "tiny_Quick96"


@pytest.fixture
def legacy_ws(faces_ws: Path, tmp_path: Path) -> Path:
    ws = tmp_path / "ws"
    shutil.copytree(faces_ws, ws, ignore=shutil.ignore_patterns("model", "merged*", "*.mp4"))
    shutil.copytree(FIXTURE, ws / "model" / FIXTURE.name)
    return ws


def test_an_earlier_model_folder_loads_resumes_and_merges(legacy_ws: Path):
    listed = run_cli("models", "list", "-w", legacy_ws)
    assert listed.returncode == 0, listed.stderr
    row = next(ln.split() for ln in listed.stdout.splitlines() if ln.startswith("tiny "))
    assert row[1:5] == ["Quick96", "3", "32", "full_face"], row

    resumed = run_cli("train", "--model", "quick96", "--name", "tiny", "--target-iter", "5", "--no-preview",
                      "-w", legacy_ws)  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    folder = legacy_ws / "model" / FIXTURE.name
    state = json.loads((folder / "state.json").read_text())
    assert state["iteration"] == 5
    assert state["seed"] == json.loads((FIXTURE / "state.json").read_text())["seed"]

    merged = run_cli("merge", "--model", "tiny", "--frames", "1-3", "-q", "-w", legacy_ws)
    assert merged.returncode == 0, merged.stderr
    assert "merged 3 frames" in merged.stdout
    session = json.loads((folder / "merge_session.json").read_text())
    assert session["overrides"] == [{"first": 1, "last": 2, "settings": {"erode": 5}}]  # kept as it was
    assert len(list((legacy_ws / "data_dst" / "merged").glob("*.png"))) == 3
