"""Video I/O speed: extract-frames and make-video frames/s.

    .venv/bin/python benchmarks/video_io.py [--repeat 3]

Runs on ../shared/media/dst_1.mp4 and src_1.mp4 when present, and on a synthetic
1280x720 clip. make-video is timed from JPEG frames (extract's default) and from PNG frames
(what merge writes), to mp4 at the default bitrate. Prints JSON, then a table.
Targets (2-core machine): extract >= 200 frames/s at 720p, make-video >= 60 frames/s.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from facelab.media.ffmpeg import ffmpeg_exe
from facelab.media.frames import extract_frames
from facelab.media.probe import probe_video
from facelab.media.video import collect_frames, encode_video
from facelab.progress import set_quiet

MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media"


def synthetic_720p(folder: Path) -> Path:
    out = folder / "synthetic_720p.mp4"
    subprocess.run(
        [
            ffmpeg_exe(),
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc2=duration=10:size=1280x720:rate=30",
            "-f",
            "lavfi",
            "-i",
            "sine=duration=10",
            "-c:v",
            "libx264",
            "-preset",
            "medium",
            "-crf",
            "20",
            "-pix_fmt",
            "yuv420p",
            "-c:a",
            "aac",
            str(out),
        ],
        check=True,
    )
    return out


def bench(video: Path, work: Path, repeat: int) -> dict:
    info = probe_video(video)
    row = {"video": video.name, "size": f"{info.width}x{info.height}", "frames": info.frame_count}
    for fmt in ("jpg", "png"):
        times = []
        for _ in range(repeat):
            r = extract_frames(video, work / fmt, fmt=fmt, overwrite=True)
            times.append(r.seconds)
        row[f"extract_{fmt}_fps"] = round(info.frame_count / statistics.median(times), 1)
        frames = collect_frames(work / fmt)
        times = []
        for _ in range(repeat):
            t = time.perf_counter()
            encode_video(
                frames,
                work / f"out_{fmt}.mp4",
                info.fps_fraction,
                audio_from=video if info.has_audio else None,
                overwrite=True,
            )
            times.append(time.perf_counter() - t)
        row[f"make_video_from_{fmt}_fps"] = round(len(frames) / statistics.median(times), 1)
    return row


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    set_quiet(True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        videos = [MEDIA / n for n in ("dst_1.mp4", "src_1.mp4") if (MEDIA / n).exists()]
        if not videos:
            print(f"note: {MEDIA} not found, benchmarking the synthetic clip only", file=sys.stderr)
        videos.append(synthetic_720p(tmp))
        rows = [bench(v, tmp / v.stem, args.repeat) for v in videos]
    print(json.dumps({"benchmark": "video_io", "results": rows}, indent=2))
    cols = [
        "video",
        "size",
        "frames",
        "extract_jpg_fps",
        "extract_png_fps",
        "make_video_from_jpg_fps",
        "make_video_from_png_fps",
    ]
    print("\n" + " | ".join(cols))
    for r in rows:
        print(" | ".join(str(r[c]) for c in cols))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
