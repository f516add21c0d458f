"""`facelab eval` measures what it claims: on real dst frames (shared/media/dst_1.mp4) made into
controlled results (the dst itself, a blurred face, a colour cast, a face pasted with a hard edge,
shuffled frames), each metric moves the way it says, and the report is written."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from facelab.eval import metrics
from facelab.eval.evaluate import FrameScorer, decode, evaluate
from tests.conftest import run_cli

FRAMES = 12


def _write(path: Path, frames: list[np.ndarray]) -> Path:
    """H.264 at near-lossless quality (the chroma is still subsampled, as in every result.mp4)."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=25, options={"crf": "4", "preset": "ultrafast"})
        stream.width, stream.height, stream.pix_fmt = frames[0].shape[1], frames[0].shape[0], "yuv420p"
        for f in frames:
            out.mux(stream.encode(av.VideoFrame.from_ndarray(f, format="bgr24")))
        out.mux(stream.encode())
    return path


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> dict:
    from tests.conftest import MEDIA

    if not MEDIA.is_dir():
        pytest.skip(f"real face media not found at {MEDIA} (the project's shared/ folder is absent)")
    root = tmp_path_factory.mktemp("eval")
    frames = [f for _, f in zip(range(FRAMES), decode(MEDIA / "dst_1.mp4"), strict=False)]
    dst = _write(root / "dst.mp4", frames)
    frames = list(decode(dst))  # as the metrics will see them
    scorer = FrameScorer(None)
    hulls = []
    for f in frames:
        lm = scorer.landmarks(f, scorer.find_dst_face(f).rect)
        hulls.append(metrics.face_regions(lm, f.shape)["face"])

    def inside(make) -> list[np.ndarray]:
        pairs = enumerate(zip(frames, hulls, strict=True))
        return [np.where(h[..., None], make(i, f), f).astype(np.uint8) for i, (f, h) in pairs]

    clips = {"dst": dst, "same": root / "same.mp4"}
    shutil.copy(dst, clips["same"])
    clips["blurred"] = _write(root / "blurred.mp4", inside(lambda i, f: cv2.GaussianBlur(f, (0, 0), 4)))
    cast = np.array([1.0, 0.75, 1.35])  # BGR: a strong red-yellow cast
    clips["cast"] = _write(root / "cast.mp4", inside(lambda i, f: np.clip(f * cast, 0, 255)))
    # A face cut from another place of the frame, pasted without blending: a hard edge on the border.
    clips["pasted"] = _write(root / "pasted.mp4", inside(lambda i, f: np.roll(f, (0, 140), axis=(0, 1))))
    order = np.random.default_rng(0).permutation(FRAMES)
    clips["shuffled"] = _write(root / "shuffled.mp4", [frames[i] for i in order])
    return clips


def _summary(clips: dict, name: str) -> dict:
    ev = evaluate(clips[name], clips["dst"], None, None)
    assert len(ev.frames) == FRAMES and all(f["dst_face"] for f in ev.frames)
    return {k: v["mean"] for k, v in ev.summary().items()} | {"_ev": ev}


def test_a_result_equal_to_its_dst_measures_no_difference(clips):
    s = _summary(clips, "same")
    assert s["jitter"] == 0 and s["nme"] == 0 and s["pose_deg"] == 0 and s["delta_e"] == 0
    assert s["background_psnr"] == 99 and s["sharpness"] == pytest.approx(1) and s["seam"] == pytest.approx(1)
    assert s["flicker"] == pytest.approx(1) and s["covered"] == 0 and s["detected"] == 1
    assert all(f["own_distance"] == 0 for f in s["_ev"].frames)


def test_swap_rate_is_zero_for_the_dst_itself_and_one_against_its_own_identity(clips):
    # The src identity is taken to be the dst person's: a result that is the dst is not swapped.
    scorer = FrameScorer(None)
    frame = next(decode(clips["dst"]))
    from facelab.faces.identity import descriptor

    centroid = descriptor(frame, scorer.landmarks(frame, scorer.find_dst_face(frame).rect))
    ev = evaluate(clips["same"], clips["dst"], None, centroid)
    assert {f["swapped"] for f in ev.frames} == {0.0}  # its own face is nearer still (distance 0)
    assert ev.summary()["src_match"]["mean"] == 1.0  # and it is the same person as that "src"


def test_a_blurred_face_reads_less_sharp(clips):
    s = _summary(clips, "blurred")
    assert s["sharpness"] < 0.6 and s["covered"] == 1


def test_a_colour_cast_reads_as_a_colour_difference(clips):
    assert _summary(clips, "cast")["delta_e"] > 10
    assert _summary(clips, "blurred")["delta_e"] < 3


def test_a_hard_edged_paste_reads_as_a_seam(clips):
    assert _summary(clips, "pasted")["seam"] > 1.5
    assert _summary(clips, "blurred")["seam"] < 1.2  # a blur softens the border, it adds no edge


def test_shuffled_frames_read_as_flicker_and_jitter(clips):
    s = _summary(clips, "shuffled")
    assert s["flicker"] > 3 and s["jitter"] > 0.02, s


def test_eval_writes_the_report_and_compares(clips, tmp_path: Path):
    out = tmp_path / "report"
    proc = run_cli("eval", "--compare", clips["same"], clips["cast"], "--dst", clips["dst"], "--html", out,
                   "-w", tmp_path / "ws")  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "colour difference" in proc.stdout and "report:" in proc.stdout
    data = json.loads((out / "report.json").read_text())
    names = [Path(r["result"]).name for r in data["results"]]
    assert names == ["same.mp4", "cast.mp4"] and len(data["results"][1]["frames"]) == FRAMES
    page = (out / "index.html").read_text()
    assert "same.mp4" in page and "cast.mp4" in page and 'src="curves.png"' in page
    for png in ("curves.png", "worst_colour.png", "contact.png"):
        assert cv2.imread(str(out / png)) is not None, png

    every = run_cli("eval", "--result", clips["cast"], "--dst", clips["dst"], "--every", "4", "--html", out,
                    "-w", tmp_path / "ws")  # fmt: skip
    assert every.returncode == 0, every.stderr
    frames = json.loads((out / "report.json").read_text())["results"][0]["frames"]
    assert [f["frame"] for f in frames] == [0, 4, 8]
    assert "jitter" not in frames[0] and "jitter" in frames[1]  # each against the frame before it


def test_bad_input_is_one_clear_line(clips, tmp_path: Path):
    from tests.conftest import assert_clean_error

    missing = run_cli("eval", "-w", tmp_path)
    assert_clean_error(missing, 1, "result.mp4 does not exist", "make-video")
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all")
    assert_clean_error(run_cli("eval", "--result", broken, "--dst", clips["dst"], "-w", tmp_path), 1,
                       "broken.mp4", "cannot read it as a video")  # fmt: skip
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<h1>my own page</h1>")
    taken = run_cli("eval", "--result", clips["same"], "--dst", clips["dst"], "--html", site, "-w", tmp_path)
    assert_clean_error(taken, 1, "index.html is not a facelab report", "--html")
    assert (site / "index.html").read_text() == "<h1>my own page</h1>"
