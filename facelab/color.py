"""Colour transfer: make one face take another's colours (merge: the predicted face toward the dst
face; training: src faces toward dst faces, `ct_mode`).

Images are float32 BGR in [0, 1]; masks float32 (H, W) in [0, 1]. `-m` modes take their
statistics inside the mask only. All modes are deterministic (the random rotations and
directions of idt/sot come from a fixed seed), so a frame merges the same way every time.
"""

from __future__ import annotations

import cv2
import numpy as np

MODES = ("none", "rct", "lct", "mkl", "mkl-m", "idt", "idt-m", "sot-m", "mix-m")


def _pixels(img: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    flat = img.reshape(-1, img.shape[-1])
    if mask is None:
        return flat
    sel = mask.reshape(-1) > 0.5
    return flat[sel] if sel.sum() >= 16 else flat


def _sqrtm(c: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh(c)
    return (v * np.sqrt(np.clip(w, 1e-8, None))) @ v.T


def rct(src, dst, src_mask=None, dst_mask=None):
    """Reinhard: match mean and standard deviation per channel in Lab.

    A face with far less chroma spread than the dst (a blurry prediction's near-grey eyes) has its
    small chroma deviations multiplied by the std ratio, which made green and purple fringes. So
    the gain is capped at 3, and each channel of the result is kept within the range the two faces
    span together (their 0.5-99.5 percentiles): no colour appears that neither face has."""
    s = cv2.cvtColor(np.clip(src, 0, 1).astype(np.float32), cv2.COLOR_BGR2LAB)
    t = cv2.cvtColor(np.clip(dst, 0, 1).astype(np.float32), cv2.COLOR_BGR2LAB)
    ps, pt = _pixels(s, src_mask), _pixels(t, dst_mask)
    ms, ss = ps.mean(0), ps.std(0) + 1e-6
    mt, st = pt.mean(0), pt.std(0)
    out = (s - ms) * np.clip(st / ss, 0, 3) + mt
    (lo_s, hi_s), (lo_t, hi_t) = np.percentile(ps, (0.5, 99.5), 0), np.percentile(pt, (0.5, 99.5), 0)
    out = np.clip(out, np.minimum(lo_s, lo_t), np.maximum(hi_s, hi_t))
    return np.clip(cv2.cvtColor(out.astype(np.float32), cv2.COLOR_LAB2BGR), 0, 1)


def _linear(src, dst, src_mask, dst_mask, kind: str):
    ps, pt = _pixels(src, src_mask).astype(np.float64), _pixels(dst, dst_mask).astype(np.float64)
    ms, mt = ps.mean(0), pt.mean(0)
    cs = np.cov(ps, rowvar=False) + np.eye(3) * 1e-5
    ct = np.cov(pt, rowvar=False) + np.eye(3) * 1e-5
    if kind == "lct":  # x' = Ct^1/2 Cs^-1/2 (x - ms) + mt
        a = _sqrtm(ct) @ np.linalg.inv(_sqrtm(cs))
    else:  # Monge-Kantorovich: the linear map that moves Cs to Ct with least displacement
        cs_half = _sqrtm(cs)
        cs_inv_half = np.linalg.inv(cs_half)
        a = cs_inv_half @ _sqrtm(cs_half @ ct @ cs_half) @ cs_inv_half
    out = (src.reshape(-1, 3) - ms) @ a.T + mt
    return np.clip(out.reshape(src.shape), 0, 1).astype(np.float32)


def _rotations(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        q, r = np.linalg.qr(rng.normal(size=(3, 3)))
        out.append(q * np.sign(np.diag(r)))
    return out


def _match_1d(x: np.ndarray, source: np.ndarray, target: np.ndarray, bins: int = 256) -> np.ndarray:
    """Map values x (drawn like `source`) so their distribution becomes `target`'s (CDF matching)."""
    lo, hi = min(source.min(), target.min()), max(source.max(), target.max())
    edges = np.linspace(lo, hi + 1e-6, bins + 1)
    cdf_s = np.cumsum(np.histogram(source, edges)[0]).astype(np.float64)
    cdf_t = np.cumsum(np.histogram(target, edges)[0]).astype(np.float64)
    cdf_s /= cdf_s[-1]
    cdf_t /= cdf_t[-1]
    centres = (edges[:-1] + edges[1:]) / 2
    mapped = np.interp(cdf_s, cdf_t, centres)
    return np.interp(x, centres, mapped)


def idt(src, dst, src_mask=None, dst_mask=None, iterations: int = 20):
    """Iterative distribution transfer (Pitié): 1-D histogram matching along random rotations."""
    x = src.reshape(-1, 3).astype(np.float64)
    sel_s = _pixels(np.arange(len(x))[:, None], src_mask)[:, 0] if src_mask is not None else slice(None)
    t = _pixels(dst, dst_mask).astype(np.float64)
    for rot in _rotations(iterations):
        xr, tr = x @ rot, t @ rot
        for k in range(3):
            xr[:, k] = _match_1d(xr[:, k], xr[sel_s, k], tr[:, k])
        x = xr @ rot.T
    return np.clip(x.reshape(src.shape), 0, 1).astype(np.float32)


def sot(src, dst, src_mask=None, dst_mask=None, steps: int = 10, batch: int = 5, reg: bool = True):
    """Sliced optimal transport: move the masked pixels along sorted 1-D projections."""
    x = src.reshape(-1, src.shape[-1]).astype(np.float64)
    sel = (src_mask.reshape(-1) > 0.5) if src_mask is not None else np.ones(len(x), bool)
    if sel.sum() < 16:
        sel[:] = True
    t = _pixels(dst, dst_mask).astype(np.float64)
    rng = np.random.default_rng(0)
    moved = x[sel].copy()
    for _ in range(steps):
        advect = np.zeros_like(moved)
        for _ in range(batch):
            d = rng.normal(size=x.shape[1])
            d /= np.linalg.norm(d)
            ps, pt = moved @ d, t @ d
            order = np.argsort(ps)
            quant = np.interp(np.linspace(0, 1, len(ps)), np.linspace(0, 1, len(pt)), np.sort(pt))
            delta = np.empty_like(ps)
            delta[order] = quant - ps[order]
            advect += np.outer(delta, d)
        moved += advect / batch
    out = x.copy()
    out[sel] = moved
    out = out.reshape(src.shape).astype(np.float32)
    if reg:  # smooth the displacement so neighbouring pixels move together
        disp = out - src.astype(np.float32)
        disp = cv2.bilateralFilter(disp, 5, 0.1, 3)
        out = src + disp
    return out.astype(np.float32)  # unclipped: callers may work in Lab


def mix(src, dst, src_mask, dst_mask):
    """lct on lightness, sot on the a/b colour channels (Lab)."""
    scale = np.float32([100, 127, 127])
    s = cv2.cvtColor(np.clip(src, 0, 1).astype(np.float32), cv2.COLOR_BGR2LAB) / scale
    t = cv2.cvtColor(np.clip(dst, 0, 1).astype(np.float32), cv2.COLOR_BGR2LAB) / scale
    ls, lt = _pixels(s[..., :1], src_mask)[:, 0], _pixels(t[..., :1], dst_mask)[:, 0]
    light = (s[..., 0] - ls.mean()) * (lt.std() / (ls.std() + 1e-6)) + lt.mean()
    ab = sot(s[..., 1:], t[..., 1:], src_mask, dst_mask, reg=False)
    ab = (s[..., 1:] + np.clip(ab - s[..., 1:], -1, 1)).astype(np.float32)
    lab = np.dstack([np.clip(light, 0, 1), ab]).astype(np.float32) * scale
    return np.clip(cv2.cvtColor(lab, cv2.COLOR_LAB2BGR), 0, 1)


def transfer(mode: str, src: np.ndarray, dst: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """`src` recoloured toward `dst`; `mask` marks the face in both (they are aligned crops)."""
    if mode == "none":
        return src
    if mode == "rct":
        return rct(src, dst, mask, mask)
    if mode in ("lct", "mkl"):
        return _linear(src, dst, None, None, mode)
    if mode == "mkl-m":
        return _linear(src, dst, mask, mask, "mkl")
    if mode == "idt":
        return idt(src, dst)
    if mode == "idt-m":
        return idt(src, dst, mask, mask)
    if mode == "sot-m":
        return np.clip(sot(src, dst, mask, mask), 0, 1)
    if mode == "mix-m":
        return mix(src, dst, mask, mask)
    raise ValueError(f"unknown colour transfer {mode!r}: use one of {', '.join(MODES)}")
