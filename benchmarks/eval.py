"""`facelab eval` speed: frames scored per second at 720p, end to end (decoding both videos,
finding the face, landmarks, two face descriptors, optical flow and every metric).

    .venv/bin/python benchmarks/eval.py [--every 1] [--workers N]

dst_1.mp4 (720x720, 125 frames) is scored against itself, the dst faces detected (no faceset):
the work per frame is the same whatever the result shows. Prints JSON, then a line; the CPU flags are
named beside the absolute figures. Target: at least 4 frames/s with --every 1.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from facelab import progress  # noqa: E402
from facelab.device import cpu_summary  # noqa: E402
from facelab.eval.evaluate import evaluate  # noqa: E402

MEDIA = REPO.parent / "shared" / "media"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--every", type=int, default=1)
    ap.add_argument("--workers", type=int, default=None, help="default: one per core")
    a = ap.parse_args()
    if not MEDIA.is_dir():
        raise SystemExit(f"needs the real clips in {MEDIA}")
    progress.set_quiet(True)
    dst = MEDIA / "dst_1.mp4"
    start = time.perf_counter()
    ev = evaluate(dst, dst, None, None, every=a.every, workers=a.workers)
    seconds = time.perf_counter() - start
    cpu, flags = cpu_summary()
    out = {"cpu": cpu, "flags": flags, "cores": len(os.sched_getaffinity(0)), "video": "dst_1.mp4 720x720",
           "decoded": ev.decoded, "scored": len(ev.frames), "every": a.every, "seconds": round(seconds, 2),
           "scored_fps": round(len(ev.frames) / seconds, 2)}  # fmt: skip
    print(json.dumps(out))
    print(f"\n{cpu} ({' '.join(flags)}), {out['cores']} cores: {out['scored']} of {out['decoded']} frames "
          f"scored in {seconds:.1f} s = {out['scored_fps']} frames/s (target >= 4 with --every 1)")


if __name__ == "__main__":
    main()
