"""`run --model auto`: which model the face size and the time budget pick, measured here, and that a
run keeps its choice."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from facelab.precision import decisions
from facelab.run import Run, RunOptions
from facelab.train import auto
from facelab.workspace import Workspace
from tests.conftest import assert_clean_error, run_cli


def test_the_candidates_stop_at_the_dst_faces_size():
    assert [c.label() for c in auto.candidates(None)] == ["Quick96"]
    assert [c.resolution for c in auto.candidates(200)] == [96, 128, 160, 192, 224]
    assert [c.resolution for c in auto.candidates(600)][-1] == 512
    needed = [c.needed for c in auto.candidates(600)]
    assert needed[0] == auto.FACES_AT_96 and needed == sorted(needed)


def test_a_quick96_step_is_timed_here(tmp_path: Path, monkeypatch):
    monkeypatch.setenv("FACELAB_CACHE_DIR", str(tmp_path))
    c = auto.candidates(None)[0]
    auto.time_step(c, torch.device("cpu"))
    assert 0.001 < c.step_s < 60 and c.precision in ("fp32", "bf16")
    seen = c.faces_in(600.0)
    assert seen == int(600.0 / c.step_s * c.batch)
    assert [d["model"] for d in decisions()] == ["quick96"]  # the precision is cached ...
    again = auto.candidates(None)[0]
    auto.time_step(again, torch.device("cpu"))
    assert again.precision == c.precision and 0.001 < again.step_s < 60  # ... the speed timed again


@pytest.mark.parametrize(("budget_s", "chosen"), [(60.0, "Quick96"), (2000.0, "SAEHD 160 px"),
                                                   (10**6, "SAEHD 320 px")])  # fmt: skip
def test_the_largest_model_that_sees_enough_faces_is_picked(monkeypatch, budget_s: float, chosen: str):
    # Step times in proportion to the pixels (Quick96 0.2 s for 4 faces, SAEHD 128 0.5 s for 8).
    timed = []

    def fake_time(c, device):
        c.step_s = 0.2 if c.model == "quick96" else 0.5 * (c.resolution / 128) ** 2
        timed.append(c.resolution)

    monkeypatch.setattr(auto, "time_step", fake_time)
    lines = []
    got = auto.pick(330, budget_s, torch.device("cpu"), lines.append)
    assert got.label() == chosen
    assert len(lines) == len(timed)
    # The search ends at the first candidate that falls short: nothing larger is timed.
    assert timed == [c.resolution for c in auto.candidates(330)][: len(timed)]
    if chosen != "SAEHD 320 px":
        assert timed[-1] > got.resolution or chosen == "Quick96"


def test_a_run_keeps_its_choice(tmp_path: Path):
    ws = Workspace(tmp_path / "ws")
    ws.init()
    video = tmp_path / "v.mp4"
    video.write_bytes(b"x")
    opts = RunOptions(src=video, dst=video, model="auto")
    first = Run(ws, opts).model_choice(lambda: {"model": "saehd", "resolution": 192})
    again = Run(ws, opts).model_choice(lambda: pytest.fail("a recorded choice is not decided again"))
    assert first == again == {"model": "saehd", "resolution": 192}


def test_auto_needs_a_time_budget(tmp_path: Path, media: Path):
    proc = run_cli("run", "--src", media / "src_1.mp4", "--dst", media / "dst_1.mp4", "--model", "auto",
                   "--iterations", "10", "-w", tmp_path / "ws")  # fmt: skip
    assert_clean_error(proc, 2, "--model auto", "--minutes")
