from __future__ import annotations

import shutil
import subprocess
from fractions import Fraction
from pathlib import Path

import av
import cv2
import numpy as np
import pytest

from facelab.media.probe import probe_video
from tests.conftest import assert_clean_error, make_clip, run_cli


def prepared_workspace(tmp_path: Path, seconds: float = 2.0, rate: str = "25") -> Path:
    """A workspace with data_dst extracted and merged/ + merged_mask/ filled from its frames."""
    ws = tmp_path / "ws"
    ws.mkdir()
    make_clip(ws / "data_dst.mp4", seconds=seconds, rate=rate)
    assert run_cli("extract-frames", "dst", "-w", ws, "--format", "png").returncode == 0
    merged = ws / "data_dst" / "merged"
    masks = ws / "data_dst" / "merged_mask"
    merged.mkdir()
    masks.mkdir()
    for p in sorted((ws / "data_dst").glob("*.png")):
        shutil.copy(p, merged / p.name)
        mask = np.zeros((240, 320), np.uint8)
        mask[60:180, 100:220] = 255
        cv2.imwrite(str(masks / p.name), mask)
    return ws


def stream_facts(path: Path) -> dict:
    with av.open(str(path)) as c:
        v = c.streams.video[0]
        return {
            "codec": v.codec_context.name,
            "pix_fmt": v.codec_context.pix_fmt,
            "range": int(v.codec_context.color_range),  # 0 = not declared, 1 = AVCOL_RANGE_MPEG ("tv")
            "space": int(v.codec_context.colorspace),  # 2 = not declared, 1 = BT.709
            "frames": v.frames,
            "rate": v.average_rate,
            "audio": [a.codec_context.name for a in c.streams.audio],
            "duration": c.duration / 1e6,
        }


def test_merged_to_result_with_sound_and_mask(tmp_path: Path):
    ws = prepared_workspace(tmp_path, rate="30000/1001")
    proc = run_cli("make-video", "-w", ws)
    assert proc.returncode == 0, proc.stderr
    facts = stream_facts(ws / "result.mp4")
    assert facts["codec"] == "h264" and facts["pix_fmt"] == "yuv420p"
    assert (facts["range"], facts["space"]) == (1, 6)  # the dst declares nothing: BT.601, as ffmpeg reads it
    assert facts["frames"] == 60 and facts["rate"] == Fraction(30000, 1001)
    assert facts["audio"] == ["aac"]
    dst = probe_video(ws / "data_dst.mp4")
    assert abs(facts["duration"] - dst.duration) <= 1001 / 30000
    mask = stream_facts(ws / "result_mask.mp4")
    assert mask["frames"] == 60 and mask["audio"] == []
    # Lossless mask: a decoded frame matches the PNG exactly.
    with av.open(str(ws / "result_mask.mp4")) as c:
        first = next(c.decode(video=0)).to_ndarray(format="gray")
    assert np.abs(first.astype(int) - cv2.imread(str(ws / "data_dst/merged_mask/00001.png"), 0)).max() <= 1


def test_a_killed_encode_leaves_no_temp_file_behind_the_next_run(tmp_path: Path):
    import os
    import time

    ws = prepared_workspace(tmp_path)
    stale = ws / ".result.abc123.tmp.mp4"  # what a SIGKILLed make-video leaves (atomic_path's name)
    stale.write_bytes(b"x" * 1000)
    old = time.time() - 3600
    os.utime(stale, (old, old))
    # Touched just now, but make-video holds the merged frames, so no other encode of result.mp4 can
    # be running: this one was killed a moment ago (the rerun after a kill meets exactly this).
    just_killed = ws / ".result_mask.def456.tmp.mp4"
    just_killed.write_bytes(b"y")
    (ws / "result.mp4").write_bytes(b"a whole earlier result")
    assert_clean_error(run_cli("make-video", "-w", ws), 1, "--overwrite")  # refused, and still tidied
    assert not stale.exists() and not just_killed.exists()
    frames = tmp_path / "frames"
    shutil.copytree(ws / "data_dst" / "merged", frames)
    live = tmp_path / ".out.ghi789.tmp.mp4"  # --from holds nothing: a fresh temp may be a live writer's
    live.write_bytes(b"z")
    assert run_cli("make-video", "-w", ws, "--from", frames, "--output", tmp_path / "out.mp4").returncode == 0
    assert live.exists()


def test_result_not_overwritten_without_flag(tmp_path: Path):
    ws = prepared_workspace(tmp_path)
    (ws / "result.mp4").write_bytes(b"earlier result")
    assert_clean_error(run_cli("make-video", "-w", ws), 1, "result.mp4", "--overwrite")
    assert (ws / "result.mp4").read_bytes() == b"earlier result"
    assert run_cli("make-video", "-w", ws, "--overwrite").returncode == 0
    assert stream_facts(ws / "result.mp4")["frames"] == 50


@pytest.mark.parametrize("fmt,ext", [("mp4-lossless", "mp4"), ("mov-lossless", "mov"), ("avi", "avi")])
def test_other_formats(tmp_path: Path, fmt: str, ext: str):
    ws = prepared_workspace(tmp_path, seconds=1.0)
    proc = run_cli("make-video", "-w", ws, "--format", fmt)
    assert proc.returncode == 0, proc.stderr
    facts = stream_facts(ws / f"result.{ext}")
    assert facts["frames"] == 25 and facts["codec"] == "h264" and facts["audio"] == ["aac"]
    assert (ws / f"result_mask.{ext}").exists()


def test_gap_in_merged_names_first_gap(tmp_path: Path):
    ws = prepared_workspace(tmp_path, seconds=1.0)
    (ws / "data_dst/merged/00007.png").unlink()
    (ws / "data_dst/merged/00009.png").unlink()
    assert_clean_error(run_cli("make-video", "-w", ws), 1, "00007", "missing", "run `facelab merge`")
    assert not (ws / "result.mp4").exists()
    (ws / "data_dst/00007.png").unlink()  # the dst frame itself is gone: merging cannot fill the gap
    assert_clean_error(run_cli("make-video", "-w", ws), 1, "00007", "extract-frames dst --overwrite")


def test_missing_last_merged_frame(tmp_path: Path):
    ws = prepared_workspace(tmp_path, seconds=1.0)
    (ws / "data_dst/merged/00025.png").unlink()
    assert_clean_error(run_cli("make-video", "-w", ws), 1, "00025", "missing")


def test_empty_mask_folder_skips_mask_video(tmp_path: Path):
    ws = prepared_workspace(tmp_path, seconds=1.0)
    shutil.rmtree(ws / "data_dst/merged_mask")
    (ws / "data_dst/merged_mask").mkdir()
    proc = run_cli("make-video", "-w", ws)
    assert proc.returncode == 0, proc.stderr
    assert "no mask frames" in proc.stdout and "skipping" in proc.stdout
    assert (ws / "result.mp4").exists() and not (ws / "result_mask.mp4").exists()


def test_bad_format_and_bitrate(tmp_path: Path):
    assert_clean_error(run_cli("make-video", "-w", tmp_path, "--format", "webm"), 2, "--format")
    assert_clean_error(run_cli("make-video", "-w", tmp_path, "--bitrate", "0"), 2, "--bitrate")


def test_no_merged_folder(tmp_path: Path):
    assert_clean_error(run_cli("make-video", "-w", tmp_path), 1, "merged", "facelab merge")


def test_from_folder_without_dst_needs_fps(tmp_path: Path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(1, 11):
        cv2.imwrite(str(frames / f"{i:04d}.jpg"), np.full((64, 80, 3), i * 20, np.uint8))
    ws = tmp_path / "ws"
    assert_clean_error(run_cli("make-video", "-w", ws, "--from", frames), 1, "--fps")
    proc = run_cli("make-video", "-w", ws, "--from", frames, "--fps", "12")
    assert proc.returncode == 0, proc.stderr
    facts = stream_facts(ws / "result.mp4")
    assert facts["frames"] == 10 and facts["rate"] == 12 and facts["audio"] == []


def test_round_trip_synthetic(tmp_path: Path):
    clip = make_clip(tmp_path / "data_dst.mp4", seconds=3.0, rate="30")
    round_trip(tmp_path, clip)


def test_round_trip_real_dst_1(tmp_path: Path, media: Path):
    round_trip(tmp_path, media / "dst_1.mp4")


def round_trip(tmp_path: Path, video: Path) -> None:
    """video -> frames -> make-video --from those frames: same frames, fps, sound and duration."""
    ws = tmp_path / "ws"
    assert run_cli("extract-frames", "dst", "--input", video, "-w", ws).returncode == 0
    proc = run_cli("make-video", "-w", ws, "--from", ws / "data_dst")
    assert proc.returncode == 0, proc.stderr
    src, out = probe_video(video), probe_video(ws / "result.mp4")
    assert out.frame_count == src.frame_count
    assert out.fps_fraction == src.fps_fraction
    assert out.has_audio and out.audio_codec == "aac"
    assert abs(out.duration - src.duration) <= 1 / float(src.fps_fraction)
    facts = stream_facts(ws / "result.mp4")
    assert facts["range"] == 1 and facts["space"] in (1, 6)  # the dst's BT.709, or BT.601 for none
    # The picture survives the trip: no range or colour shift, only the encoder's loss.
    with av.open(str(video)) as a, av.open(str(ws / "result.mp4")) as b:
        fa = next(a.decode(video=0)).to_ndarray(format="rgb24").astype(float)
        fb = next(b.decode(video=0)).to_ndarray(format="rgb24").astype(float)
    assert 10 * np.log10(255**2 / ((fa - fb) ** 2).mean()) >= 40


def test_the_result_keeps_the_colour_matrix_the_dst_declares(tmp_path: Path, media: Path):
    """A dst that declares BT.709 gives a BT.709 result; one that declares nothing (dst_1), which
    ffmpeg decodes as BT.601, gives a result that declares BT.601. Encoding dst_1 in BT.709 cost
    0.6 dB of PSNR in the untouched background."""
    from facelab.media.ffmpeg import ffmpeg_exe

    tagged = tmp_path / "bt709.mp4"
    subprocess.run([ffmpeg_exe(), "-v", "error", "-i", str(media / "dst_1.mp4"), "-t", "0.4", "-vf",
                    "scale=out_color_matrix=bt709:out_range=tv", "-colorspace", "bt709", "-color_range", "tv",
                    "-color_primaries", "bt709", "-color_trc", "bt709", str(tagged)], check=True)  # fmt: skip
    for video, declared, made in ((tagged, (1, 1), (1, 1)), (media / "dst_1.mp4", (0, 2), (1, 6))):
        assert (stream_facts(video)["range"], stream_facts(video)["space"]) == declared
        ws = tmp_path / video.stem
        assert run_cli("extract-frames", "dst", "--input", video, "-w", ws).returncode == 0
        assert run_cli("make-video", "-w", ws, "--from", ws / "data_dst", "--no-audio").returncode == 0
        facts = stream_facts(ws / "result.mp4")
        assert (facts["range"], facts["space"]) == made, video
        with av.open(str(video)) as a, av.open(str(ws / "result.mp4")) as b:
            psnr = [10 * np.log10(255**2 / ((x.to_ndarray(format="rgb24").astype(float)
                                              - y.to_ndarray(format="rgb24")) ** 2).mean())
                    for x, y in zip(a.decode(video=0), b.decode(video=0), strict=True)]  # fmt: skip
        assert np.mean(psnr) >= 44, (video, np.mean(psnr))
