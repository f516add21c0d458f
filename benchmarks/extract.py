"""Face extraction speed and quality, end to end through the CLI.

    .venv/bin/python benchmarks/extract.py

On ../shared/media dst_1.mp4 (720x720), src_1.mp4 (512x388) and dst_1 padded to 1280x720:
frames/s (wall clock of `facelab extract-faces`, model loading included), the share of
frames with a face, landmark jitter (mean frame-to-frame landmark motion over the eye
distance) raw and smoothed, and peak memory of the largest process.
Target (2-core machine): at least 25 frames/s at 720p.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from facelab.faces import meta
from facelab.faces.track import landmark_jitter
from facelab.media.ffmpeg import ffmpeg_exe

MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media"


def cli(*args) -> str:
    proc = subprocess.run([sys.executable, "-m", "facelab", *map(str, args)], capture_output=True, text=True)
    if proc.returncode:
        raise SystemExit(proc.stderr)
    return proc.stdout


def jitter(aligned: Path, frames: int) -> float:
    by_frame = {int(p.stem.split("_")[0]): meta.read(p).source_landmarks for p in aligned.glob("*_0.jpg")}
    return landmark_jitter([by_frame.get(n) for n in range(1, frames + 1)])


def bench(video: Path, side: str, work: Path) -> dict:
    ws = work / video.stem
    cli("extract-frames", side, "--input", video, "-w", ws, "--yes", "-q")
    frames = len(list((ws / f"data_{side}").glob("*.jpg")))
    row = {"video": video.name, "frames": frames}
    for smooth in ("--no-smooth", "--smooth"):
        t = time.perf_counter()
        cli("extract-faces", side, "-w", ws, "--yes", "-q", "--overwrite", smooth)
        seconds = time.perf_counter() - t
        aligned = ws / f"data_{side}" / "aligned"
        key = "smoothed" if smooth == "--smooth" else "raw"
        row[f"jitter_{key}"] = round(jitter(aligned, frames), 4)
        if key == "raw":
            with_face = {p.stem.split("_")[0] for p in aligned.glob("*.jpg")}
            row["fps"] = round(frames / seconds, 1)
            row["face_share"] = round(len(with_face) / frames, 4)
    return row


def main() -> int:
    if not MEDIA.is_dir():
        print(f"{MEDIA} not found: this benchmark needs the real face media", file=sys.stderr)
        return 1
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        wide = tmp / "dst_1_1280x720.mp4"
        pad = [ffmpeg_exe(), "-v", "error", "-i", str(MEDIA / "dst_1.mp4"), "-vf", "pad=1280:720:280:0"]
        subprocess.run(pad + ["-c:v", "libx264", "-crf", "18", "-an", str(wide)], check=True)
        for video, side in ((MEDIA / "dst_1.mp4", "dst"), (MEDIA / "src_1.mp4", "src"), (wide, "dst")):
            rows.append(bench(video, side, tmp))
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({"benchmark": "extract", "peak_memory_mb": round(peak), "results": rows}, indent=2))
    cols = ["video", "frames", "fps", "face_share", "jitter_raw", "jitter_smoothed"]
    print("\n" + " | ".join(cols))
    for r in rows:
        print(" | ".join(str(r[c]) for c in cols))
    print(f"peak memory (largest process): {peak:.0f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
