"""The training preview: a header, the loss graph, and rows of src | src->src | dst | dst->dst | swap
(AMP: a 2x3 grid of one face and its morph list)."""

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


def rows_grid(columns: list[np.ndarray], masked: list[np.ndarray] | None = None) -> np.ndarray:
    """`columns`: (rows, H, W, 3) uint8 BGR stacks, side by side; `masked`, the same with the masks
    applied, goes below them (SAEHD)."""

    def side_by_side_columns(cols: list[np.ndarray]) -> np.ndarray:
        return np.concatenate([np.concatenate(list(col), axis=0) for col in cols], axis=1)

    grid = side_by_side_columns(columns)
    if masked is not None:
        gap = np.full((6, grid.shape[1], 3), 40, np.uint8)
        grid = np.concatenate([grid, gap, side_by_side_columns(masked)], axis=0)
    return grid


def labelled_grid(cells: list[tuple[str, np.ndarray]], per_row: int) -> np.ndarray:
    """(H, W, 3) faces in rows of `per_row`, each captioned in its top-left corner when it is large
    enough to read (AMP's grids; the header's legend names the cells too)."""
    images = []
    for label, img in cells:
        img = img.copy()
        if img.shape[1] >= 128:
            for colour, thick in (((0, 0, 0), 3), ((255, 255, 255), 1)):
                cv2.putText(img, label, (4, 14), cv2.FONT_HERSHEY_SIMPLEX, 0.4, colour, thick, cv2.LINE_AA)
        images.append(img)
    rows = [np.concatenate(images[i : i + per_row], axis=1) for i in range(0, len(images), per_row)]
    return np.concatenate(rows, axis=0)


def side_by_side(*grids: np.ndarray) -> np.ndarray:
    gap = np.full((grids[0].shape[0], 6, 3), 40, np.uint8)
    parts = [p for g in grids for p in (g, gap)][:-1]
    return np.concatenate(parts, axis=1)


def compose(title: str, iteration: int, points: list[list[float]], grid: np.ndarray,
            legend: str) -> np.ndarray:  # fmt: skip
    """Header (title, keys, what the columns are), the loss graph, then `grid`."""
    width = max(grid.shape[1], 480)
    if grid.shape[1] < width:  # small models: scale the faces up so the header fits
        grid = cv2.resize(
            grid, (width, grid.shape[0] * width // grid.shape[1]), interpolation=cv2.INTER_NEAREST
        )
    header = np.full((54, width, 3), 40, np.uint8)
    _text(header, f"{title}   iteration {iteration}", 16)
    _text(header, "[s] save  [b] backup  [p] update preview  [enter] save and exit", 33)
    _text(header, f"{legend}    loss: src blue, dst yellow", 50)
    return np.concatenate([header, loss_graph(points, width, GRAPH_RANGE), grid], axis=0)


ROWS_LEGEND = "src | src->src | dst | dst->dst | swap"
MORPHS = (0.25, 0.5, 0.65, 0.75, 1.0)  # the reference's morph list


def to_uint8(batch) -> np.ndarray:
    """(N, 3, H, W) float tensor in [0, 1] -> (N, H, W, 3) uint8."""
    return batch.detach().float().clamp(0, 1).mul(255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
