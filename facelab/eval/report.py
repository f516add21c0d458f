"""The evaluation's report: JSON with every frame's figures, and a self-contained static HTML page
(a summary table with a reading of each metric, per-frame curves, the worst frames of each problem
as dst | result | face mask | difference thumbnails, and a contact sheet), PNGs by matplotlib."""

from __future__ import annotations

import html
import math
from pathlib import Path

import cv2
import numpy as np

from facelab.errors import FacelabError
from facelab.eval import metrics
from facelab.eval.evaluate import Evaluation, FrameScorer, decode
from facelab.fsutil import write_bytes_atomic, write_json_atomic

# metric -> (label, format of the mean, how to read it)
READINGS = {
    "swapped": ("swap rate", "{:.0%}", "frames whose face is closer to the src than to the dst person"),
    "src_distance": ("distance to src", "{:.3f}", "to the src's mean descriptor; one person is below 0.6"),
    "src_match": ("src match", "{:.0%}", "frames within dlib's 0.6 same-person distance of the src"),
    "nme": ("expression error", "{:.3f}", "brows, eyes, nose and mouth against the dst, in eye distances"),
    "pose_deg": ("pose difference", "{:.1f} deg", "largest of yaw, pitch and roll against the dst"),
    "jitter": ("landmark jitter", "{:.4f}",
               "motion per frame that the dst's own does not explain, in eye distances (0: as steady)"),
    "flicker": ("flicker", "{:.2f}x", "optical-flow warping error in the face over the dst's (1: as steady)"),
    "background_psnr": ("background PSNR", "{:.1f} dB", "outside the grown face; 40 dB and up: untouched"),
    "seam": ("seam", "{:.2f}x", "edge energy along the face border over the dst's; above 1.5 is an edge"),
    "delta_e": ("colour difference", "{:.1f} dE",
                "CIEDE2000 of the inner face's mean colour; below 3 hard to see, above 10 a cast"),
    "sharpness": ("sharpness", "{:.2f}x",
                  "Laplacian variance in the inner face over the dst's; below 0.6 is blurred"),
    "detected": ("detection rate", "{:.0%}", "result frames where the face detector still finds the face"),
    "covered": ("coverage", "{:.0%}", "frames with a dst face whose face was swapped"),
}
CURVES = ("src_distance", "jitter", "flicker", "delta_e")
WORST = {"identity": ("src_distance", True), "jitter": ("jitter", True), "flicker": ("flicker", True),
         "colour": ("delta_e", True), "seam": ("seam", True), "sharpness": ("sharpness", False)}  # fmt: skip
THUMB = 128
_RATES = ("swapped", "src_match", "detected", "covered")  # shares: a spread says nothing


def summary_lines(ev: Evaluation) -> list[str]:
    lines = []
    for name, s in ev.summary().items():
        label, fmt, reading = READINGS[name]
        if s["mean"] is None:
            continue
        spread = f" (p5 {fmt.format(s['p5'])}, p95 {fmt.format(s['p95'])})" if name not in _RATES else ""
        lines.append(f"{label}: {fmt.format(s['mean'])}{spread}, {reading}")
    return lines


def to_json(evs: list[Evaluation]) -> dict:
    return {
        "format": "facelab-eval",
        "version": 1,
        "results": [{"result": str(ev.result), "dst": str(ev.dst), "every": ev.every, "decoded": ev.decoded,
                     "summary": ev.summary(), "frames": ev.frames} for ev in evs],
    }  # fmt: skip


def write_json(evs: list[Evaluation], path: Path) -> None:
    write_json_atomic(path, _finite(to_json(evs)))


def _finite(v):
    """NaN and infinities as null: JSON has neither."""
    if isinstance(v, dict):
        return {k: _finite(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_finite(x) for x in v]
    return None if isinstance(v, float) and not math.isfinite(v) else v


def _png(fig) -> bytes:
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=96, bbox_inches="tight")
    return buf.getvalue()


def _curves(evs: list[Evaluation]) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(CURVES), 1, figsize=(9, 2.2 * len(CURVES)), sharex=True)
    for ax, name in zip(axes, CURVES, strict=True):
        for ev in evs:
            xs = [f["frame"] for f in ev.frames if f.get(name) is not None]
            ax.plot(xs, [f[name] for f in ev.frames if f.get(name) is not None], lw=1, label=ev.result.name)
        ax.set_ylabel(READINGS[name][0])
        ax.grid(alpha=0.3)
    axes[0].legend(loc="upper right", fontsize=8)
    axes[-1].set_xlabel("frame")
    data = _png(fig)
    plt.close(fig)
    return data


def _worst(ev: Evaluation, metric: str, higher: bool, count: int = 6) -> list[int]:
    scored = [(f[metric], f["frame"]) for f in ev.frames
              if f.get(metric) is not None and math.isfinite(f[metric])]  # fmt: skip
    scored.sort(reverse=higher)
    return [frame for _, frame in scored[:count]]


def _thumbs(ev: Evaluation, wanted: set[int], faces) -> dict[int, np.ndarray]:
    """frame -> dst | result | face mask | difference, around the face, THUMB px high."""
    scorer, out = FrameScorer(None), {}
    for index, (res, ref) in enumerate(zip(decode(ev.result), decode(ev.dst), strict=False)):
        if index > max(wanted, default=-1):
            break
        if index not in wanted:
            continue
        face = faces.get(index) if faces is not None else scorer.find_dst_face(ref)
        if face is None:
            continue
        lm = scorer.landmarks(ref, face.rect)
        mask = metrics.face_regions(lm, ref.shape)["face"]
        x0, y0, x1, y1 = _square(lm, ref.shape)
        diff = np.clip(np.abs(res.astype(np.int16) - ref).sum(2) * 2, 0, 255).astype(np.uint8)
        tiles = [ref, res, (mask * 255).astype(np.uint8), diff]
        tiles = [t if t.ndim == 3 else cv2.cvtColor(t, cv2.COLOR_GRAY2BGR) for t in tiles]
        out[index] = np.hstack([cv2.resize(t[y0:y1, x0:x1], (THUMB, THUMB), interpolation=cv2.INTER_AREA)
                                for t in tiles])  # fmt: skip
    return out


def _square(landmarks: np.ndarray, shape) -> tuple[int, int, int, int]:
    lo, hi = landmarks.min(0), landmarks.max(0)
    c, half = (lo + hi) / 2, max(hi - lo) * 0.75
    h, w = shape[:2]
    x0, y0 = int(max(0, c[0] - half)), int(max(0, c[1] - half))
    return x0, y0, int(min(w, c[0] + half)), int(min(h, c[1] + half))


def _png_of(image: np.ndarray) -> bytes:
    return cv2.imencode(".png", image)[1].tobytes()


def check_folder(folder: Path) -> Path:
    """The report page's path; a folder whose index.html is someone else's is refused, not written
    over."""
    page = folder / "index.html"
    if page.is_file() and "<h1>facelab eval</h1>" not in page.read_text(errors="replace"):
        raise FacelabError(f"{page} is not a facelab report: give --html a folder of its own")
    return page


def write_html(evs: list[Evaluation], folder: Path, faces=None) -> Path:
    """index.html and its PNGs in `folder` (written atomically, one file at a time, the page last)."""
    page_path = check_folder(folder)
    folder.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(folder / "curves.png", _curves(evs))
    ev = evs[0]
    sections, wanted = [], {}
    for problem, (metric, higher) in WORST.items():
        wanted[problem] = _worst(ev, metric, higher)
    sampled = [f["frame"] for f in ev.frames if f.get("dst_face")]
    sheet = sampled[:: max(1, len(sampled) // 12)][:12]
    thumbs = _thumbs(ev, set(sheet).union(*wanted.values()), faces)
    by_frame = {f["frame"]: f for f in ev.frames}
    for problem, frames in wanted.items():
        rows = [thumbs[i] for i in frames if i in thumbs]
        if not rows:
            continue
        name = f"worst_{problem}.png"
        write_bytes_atomic(folder / name, _png_of(np.vstack(rows)))
        metric = WORST[problem][0]
        label, fmt = READINGS[metric][:2]
        caption = ", ".join(f"frame {i + 1}: {fmt.format(by_frame[i][metric])}"
                            for i in frames if i in thumbs)  # fmt: skip
        sections.append(f"<h3>{html.escape(problem)}: the worst frames by {html.escape(label)}</h3>"
                        f"<p>{html.escape(caption)} (dst | result | face mask | difference)</p>"
                        f'<img src="{name}" alt="worst {html.escape(problem)} frames">')  # fmt: skip
    if sheet:
        tiles = [thumbs[i][:, : 2 * THUMB] for i in sheet if i in thumbs]
        if tiles:
            rows = [np.hstack(tiles[i : i + 3] + [np.zeros_like(tiles[0])] * (3 - len(tiles[i : i + 3])))
                    for i in range(0, len(tiles), 3)]  # fmt: skip
            write_bytes_atomic(folder / "contact.png", _png_of(np.vstack(rows)))
            sections.append('<h3>Contact sheet (dst | result)</h3>'
                            '<img src="contact.png" alt="contact sheet">')  # fmt: skip
    write_bytes_atomic(page_path, _page(evs, sections).encode())
    return page_path


def _page(evs: list[Evaluation], sections: list[str]) -> str:
    head = "".join(f"<th>{html.escape(ev.result.name)}</th>" for ev in evs)
    rows = []
    summaries = [ev.summary() for ev in evs]
    for name, (label, fmt, reading) in READINGS.items():
        cells = []
        for s in summaries:
            m = s[name]
            cells.append("<td>-</td>" if m["mean"] is None else
                         f"<td>{html.escape(fmt.format(m['mean']))}</td>")  # fmt: skip
        rows.append(f"<tr><th>{html.escape(label)}</th>{''.join(cells)}<td>{html.escape(reading)}</td></tr>")
    frames = ", ".join(f"{ev.result.name}: {len(ev.frames)} of {ev.decoded} frames (every {ev.every})"
                       for ev in evs)  # fmt: skip
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>facelab eval: {html.escape(evs[0].result.name)}</title>
<style>body{{font:14px system-ui,sans-serif;margin:2em;max-width:1100px}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}img{{max-width:100%}}</style></head>
<body><h1>facelab eval</h1>
<p>{html.escape(frames)}, against {html.escape(str(evs[0].dst))}.</p>
<h2>Summary</h2><table><tr><th>metric</th>{head}<th>reading</th></tr>{"".join(rows)}</table>
<h2>Per frame</h2><img src="curves.png" alt="per-frame curves">
<h2>Where it is weakest</h2>{"".join(sections)}
</body></html>
"""
