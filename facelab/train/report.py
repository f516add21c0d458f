"""What a training run shows of itself: the preview image (AMP: its grid and morph list),
`live.json` for `facelab ui`, and `summary.txt`. The drawing itself is in preview.py."""

from __future__ import annotations

import json
import math
import os
import time
from typing import TYPE_CHECKING

import cv2
import numpy as np
import torch

from facelab.errors import FacelabError
from facelab.fsutil import write_bytes_atomic
from facelab.models.folder import HISTORY, LIVE, PREVIEW, STATE, ModelFolder
from facelab.train import preview
from facelab.workspace import SIDES

if TYPE_CHECKING:
    from facelab.train.trainer import TrainingRun


@torch.no_grad()
def render_preview(run: TrainingRun) -> np.ndarray:
    if run.model.kind == "xseg":
        return _xseg_preview(run)
    faces = {s: run.data[s].images[run.preview_idx[s]].float().div(255) for s in SIDES}
    model = run.ema.module() if run.ema is not None else run.model  # what merge will use
    with run.autocast():
        out = model(faces["src"], faces["dst"])
    title = f"{run.recipe.class_name} '{run.folder.name}'"
    points = run.history.points()
    if run.model.kind == "amp":
        legend = "src src->src dst / dst->dst swap masked | dst->dst, morph .25-1"
        return preview.compose(title, run.iteration, points, _amp_grid(run, model, faces, out), legend)
    columns = [faces["src"], out["src"], faces["dst"], out["dst"], out["swap"]]
    masked = None
    if run.recipe.loss == "saehd":  # the reference's second preview: everything through its mask
        hull = {s: run.data[s].masks[run.preview_idx[s], :1].float().div(255) for s in SIDES}
        masked = [faces["src"] * hull["src"], out["src"] * out["src_mask"], faces["dst"] * hull["dst"],
                  out["dst"] * out["dst_mask"], out["swap"] * out["swap_mask"] * out["dst_mask"]]  # fmt: skip
        masked = [preview.to_uint8(c) for c in masked]
    grid = preview.rows_grid([preview.to_uint8(c) for c in columns], masked)
    return preview.compose(title, run.iteration, points, grid, preview.ROWS_LEGEND)


def _xseg_preview(run: TrainingRun) -> np.ndarray:
    """The preview faces of both sides: face | label mask | predicted mask | face x prediction."""
    faces = torch.cat([run.data[s].images[run.preview_idx[s]] for s in SIDES]).float().div(255)
    labels = torch.cat([run.data[s].masks[run.preview_idx[s], :1] for s in SIDES]).float().div(255)
    with run.autocast():
        predicted = torch.sigmoid(run.model(faces).float())
    columns = [faces, labels.expand_as(faces), predicted.expand_as(faces), faces * predicted]
    grid = preview.rows_grid([preview.to_uint8(c) for c in columns])
    title = f"{run.recipe.class_name} '{run.folder.name}'"
    return preview.compose(title, run.iteration, run.history.points(), grid,
                           "face | label | predicted mask | face x mask")  # fmt: skip


def _amp_grid(run: TrainingRun, model: torch.nn.Module, faces: dict, out: dict) -> np.ndarray:
    """The reference's AMP previews for the first preview face: a 2x3 grid at morph 1.0, and
    dst->dst with the swap at each morph value of the list."""
    dst = faces["dst"][:1]
    with run.autocast():
        swaps = {m: model.swap(dst, morph=m) for m in preview.MORPHS}
    face, mask, dst_mask = swaps[1.0]

    def img(t):
        return preview.to_uint8(t[:1])[0]

    cells = [("src", img(faces["src"])), ("src->src", img(out["src"])), ("dst", img(dst)),
             ("dst->dst", img(out["dst"])), ("swap 1.0", img(face)),
             ("swap masked", img(face * mask * dst_mask))]  # fmt: skip
    grid = preview.labelled_grid(cells, 3)
    morphs = preview.labelled_grid(
        [("dst->dst", img(out["dst"]))] + [(f"morph {m:g}", img(swaps[m][0])) for m in preview.MORPHS], 3
    )
    return preview.side_by_side(grid, morphs)


def write_preview(run: TrainingRun, history: bool = False) -> None:
    """preview.jpg, or (`history`) history/<iteration>.jpg."""
    if not run.train_options.preview:
        return
    quality = 85 if history else 92
    ok, jpg = cv2.imencode(".jpg", render_preview(run), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        return
    if history:
        folder = run.folder.path / HISTORY
        folder.mkdir(exist_ok=True)
        write_bytes_atomic(folder / f"{run.iteration:07d}.jpg", jpg.tobytes(), fsync=False)
    else:
        write_bytes_atomic(run.folder.path / PREVIEW, jpg.tobytes(), fsync=False)


def write_live(run: TrainingRun, ms_per_iter: float, running: bool) -> None:
    live = {"iteration": run.iteration, "ms_per_iter": round(ms_per_iter, 1), "batch": run.batch,
            "target_iter": run.train_options.target_iter, "running": running, "pid": os.getpid(),
            "updated": time.time(), "points": run.history.points()}  # fmt: skip
    write_bytes_atomic(run.folder.path / LIVE, json.dumps(live).encode(), fsync=False)


# what the UI's training page reads of live.json, with the type each must have
_LIVE_FIELDS = {"iteration": int, "ms_per_iter": float, "batch": int, "target_iter": int, "running": bool,
                "updated": float}  # fmt: skip


def read_live(folder: ModelFolder) -> dict:
    """The training page's view of a model folder: live.json while (or after) a trainer writes
    it, else the saved history; and whether it trains now. A damaged file gives what can be
    read of it (fields of the wrong type, and non-finite numbers, are left out), never an error."""
    live, state = _json_object(folder, LIVE), _json_object(folder, STATE)
    out = {k: v for k, v in live.items() if k in _LIVE_FIELDS and _plain(v, _LIVE_FIELDS[k])}
    points = live.get("points")
    if not isinstance(points, list):
        history = state.get("history")
        points = history.get("buckets") if isinstance(history, dict) else None
        out.setdefault("iteration", state.get("iteration") if _plain(state.get("iteration"), int) else 0)
    out["points"] = [p for p in points if isinstance(p, list) and p and all(_plain(v, float) for v in p)
                     ] if isinstance(points, list) else []  # fmt: skip
    preview = folder.file(PREVIEW)
    saved = state.get("iteration")
    out |= {"saved_iteration": saved if _plain(saved, int) else None, "training": folder.is_locked(),
            "preview_mtime": preview.stat().st_mtime if preview.exists() else None}  # fmt: skip
    return out


def _json_object(folder: ModelFolder, name: str) -> dict:
    try:
        d = folder.read_json(name)
    except FacelabError:
        return {}
    return d if isinstance(d, dict) else {}


def _plain(value, kind: type) -> bool:
    """Whether `value` is a JSON value of `kind` (an int counts as a float; a bool as neither)."""
    if isinstance(value, bool):
        return kind is bool
    if kind is float:
        return isinstance(value, int | float) and math.isfinite(value)
    return isinstance(value, kind)


def summary(run: TrainingRun) -> str:
    params = sum(p.numel() for p in run.model.parameters())
    arch = ", ".join(f"{k}={v}" for k, v in run.model.config.items() if k != "name")
    r = run.recipe
    lines = [
        f"{r.class_name} model '{run.folder.name}'",
        f"iteration:      {run.iteration}",
        f"architecture:   {arch}",
        f"parameters:     {params / 1e6:.1f} M",
        f"face type:      {run.config['face_type']}",
        f"batch size:     {run.batch}",
        f"optimiser:      {r.optimizer} lr {r.lr:g}, lr dropout keep {r.lr_dropout:g}",
        f"augmentation:   {r.augment}",
        f"device:         {run.device} ({run.precision})",
        f"faces:          src {len(run.data['src'])}, dst {len(run.data['dst'])}",
        f"training time:  {run.elapsed / 3600:.2f} h",
        f"created:        {run.config['created']} with facelab {run.config['facelab']}",
    ]
    if run.reused_from:
        lines.append(f"reused from:    {run.reused_from}")
    imported = run.config.get("imported")
    if imported:
        lines += [f"imported from:  DeepFaceLab {imported['class']} at iteration {imported['iteration']} "
                  f"({imported['source']})",
                  f"not imported:   {', '.join(imported['not_imported']) or 'nothing'}"]  # fmt: skip
    return "\n".join(lines) + "\n"
