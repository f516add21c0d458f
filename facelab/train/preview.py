"""The training preview: a header, the loss graph, and rows of src | src->src | dst | dst->dst | swap."""

from __future__ import annotations

import cv2
import numpy as np

GRAPH_H = 100
GRAPH_RANGE = 10_000  # iterations the loss graph shows
COLOURS = [(255, 128, 0), (0, 220, 255)]  # BGR: src blue, dst yellow


def loss_graph(points: list[list[float]], width: int, last_iters: int | None = None) -> np.ndarray:
    """Per-column min..max of each loss over the shown range, on a dark background with a grid."""
    img = np.full((GRAPH_H, width, 3), 24, np.uint8)
    for y in range(0, GRAPH_H, GRAPH_H // 4):
        img[y, :] = 60
    if not points:
        return img
    pts = np.asarray(points, np.float64)
    if last_iters:
        pts = pts[pts[:, 0] > pts[-1, 0] - last_iters]
    values = pts[:, 1:]
    top = float(np.nanmax(values)) or 1.0
    cols = np.minimum((np.arange(len(pts)) * width) // max(1, len(pts)), width - 1)
    xs = np.unique(cols)
    if len(pts) < width:  # spread few points over the whole width
        xs = (np.arange(len(pts)) * (width - 1) // max(1, len(pts) - 1)).astype(int)
        cols = np.arange(len(pts))

    def y(v):
        return int((1 - v / top) * (GRAPH_H - 1))

    for k in range(values.shape[1]):
        colour = COLOURS[k % len(COLOURS)]
        line = []
        for x, c in zip(xs, np.unique(cols), strict=True):
            v = values[cols == c, k]
            img[y(v.max()) : y(v.min()) + 1, x] = colour
            line.append((x, y(v.mean())))
        cv2.polylines(img, [np.array(line, np.int32)], False, colour, 1, cv2.LINE_AA)
    return img


def _text(img: np.ndarray, text: str, y: int) -> None:
    cv2.putText(img, text, (6, y), cv2.FONT_HERSHEY_SIMPLEX, 0.42, (235, 235, 235), 1, cv2.LINE_AA)


def compose(
    title: str, iteration: int, points: list[list[float]], columns: list[np.ndarray],
    masked: list[np.ndarray] | None = None,
) -> np.ndarray:  # fmt: skip
    """`columns`: five (rows, H, W, 3) uint8 BGR stacks, in src | src->src | dst | dst->dst | swap order;
    `masked`, the same with the masks applied, goes below them (SAEHD)."""
    grid = np.concatenate([np.concatenate(list(col), axis=0) for col in columns], axis=1)
    if masked is not None:
        lower = np.concatenate([np.concatenate(list(col), axis=0) for col in masked], axis=1)
        grid = np.concatenate([grid, np.full((6, grid.shape[1], 3), 40, np.uint8), lower], axis=0)
    width = max(grid.shape[1], 480)
    if grid.shape[1] < width:  # small models: scale the faces up so the header fits
        grid = cv2.resize(
            grid, (width, grid.shape[0] * width // grid.shape[1]), interpolation=cv2.INTER_NEAREST
        )
    header = np.full((54, width, 3), 40, np.uint8)
    _text(header, f"{title}   iteration {iteration}", 16)
    _text(header, "[s] save  [b] backup  [p] update preview  [enter] save and exit", 33)
    _text(header, "src | src->src | dst | dst->dst | swap    loss: src blue, dst yellow", 50)
    return np.concatenate([header, loss_graph(points, width, GRAPH_RANGE), grid], axis=0)


def to_uint8(batch) -> np.ndarray:
    """(N, 3, H, W) float tensor in [0, 1] -> (N, H, W, 3) uint8."""
    return batch.detach().float().clamp(0, 1).mul(255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
