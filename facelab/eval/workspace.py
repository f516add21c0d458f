"""What `facelab eval` takes from a workspace when it is not told: the result, the dst video, the
dst faces' places (data_dst/aligned) and the src identity (data_src/aligned)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from facelab import progress
from facelab.errors import FacelabError
from facelab.eval import report
from facelab.eval.evaluate import (
    Evaluation,
    evaluate,
    faces_from_metadata,
    src_centroid_of_faceset,
    src_centroid_of_media,
)
from facelab.faces.faceset import load_faceset
from facelab.media.probe import probe_video, read_video_record
from facelab.workspace import Workspace


@dataclass
class EvalOptions:
    results: list[Path] = field(default_factory=list)  # empty: the workspace's result.mp4
    dst: Path | None = None  # None: the workspace's data_dst video
    dst_faceset: bool | None = None  # the dst faces' places from data_dst/aligned (None: when dst is None)
    src: list[Path] = field(default_factory=list)  # empty: the workspace's src faceset
    every: int = 1
    json_path: Path | None = None  # None: <report dir>/report.json
    html_dir: Path | None = None  # None: the workspace's report/


def run_eval(ws: Workspace, opts: EvalOptions) -> tuple[list[Evaluation], Path]:
    """Evaluate each result against the dst; write the JSON and the HTML report. Returns the
    evaluations and the report page."""
    results = opts.results or [ws.result_video]
    for r in results:
        if not r.is_file():
            raise FacelabError(f"{r} does not exist: make it with `facelab make-video` or pass --result FILE")
    html_dir = opts.html_dir or ws.report_dir
    report.check_folder(html_dir)  # before minutes of scoring
    dst = opts.dst or _dst_video(ws)
    faces = None
    aligned = ws.aligned_dir("dst")
    use_faceset = opts.dst is None if opts.dst_faceset is None else opts.dst_faceset
    if use_faceset and aligned.is_dir():
        faces = faces_from_metadata(load_faceset(aligned).faces)
    if opts.src:
        centroid = src_centroid_of_media(opts.src)
    elif ws.aligned_dir("src").is_dir():
        centroid = src_centroid_of_faceset(load_faceset(ws.aligned_dir("src")).faces)
    else:
        centroid = None
        progress.say("no src faceset and no --src: identity is measured against the dst person only")
    total = probe_video(dst).frame_count or None
    evs = [evaluate(r, dst, faces, centroid, opts.every, total) for r in results]
    page = report.write_html(evs, html_dir, faces)
    report.write_json(evs, opts.json_path or html_dir / "report.json")
    return evs, page


def _dst_video(ws: Workspace) -> Path:
    """The video the dst frames came from: as extract-frames recorded it, else data_dst.*."""
    record = read_video_record(ws.video_info_path("dst"))
    if record is not None and Path(record[0].path).is_file():
        return Path(record[0].path)
    try:
        return ws.find_video("dst")
    except FacelabError:
        raise FacelabError(
            f"no dst video in {ws.root}: pass --dst FILE, the video the result was made from"
        ) from None
