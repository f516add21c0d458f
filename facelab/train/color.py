"""Colour augmentation for SAEHD's src faces: colour transfer toward dst faces (ct_mode) and
random hue/saturation/value shifts (random_hsv_power, in tensors on the training device)."""

from __future__ import annotations

import numpy as np
import torch

from facelab.color import transfer

CT_MODES = ("none", "rct", "lct", "mkl", "idt", "sot")
_MERGE_NAME = {"rct": "rct", "lct": "lct", "mkl": "mkl", "idt": "idt", "sot": "sot-m"}


def _to_np(batch: torch.Tensor) -> np.ndarray:
    return batch.detach().float().cpu().permute(0, 2, 3, 1).numpy()


def _to_torch(arr: np.ndarray, like: torch.Tensor) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(0, 3, 1, 2))).to(like.device, like.dtype)


def color_transfer(
    src_u8: torch.Tensor, dst_u8: torch.Tensor, masks_u8: torch.Tensor, mode: str
) -> torch.Tensor:
    """src faces (uint8, B,3,R,R) recoloured toward the paired dst faces, inside the src face mask."""
    src, dst = _to_np(src_u8) / 255, _to_np(dst_u8) / 255
    mask = masks_u8[:, 0].float().cpu().numpy() / 255
    out = np.stack([transfer(_MERGE_NAME[mode], s.astype(np.float32), d.astype(np.float32), m)
                    for s, d, m in zip(src, dst, mask, strict=True)])  # fmt: skip
    return _to_torch(np.clip(out * 255 + 0.5, 0, 255).astype(np.uint8), src_u8)


def hsv_jitter(batch: torch.Tensor, power: float, gens: list[torch.Generator]) -> torch.Tensor:
    """Shift hue by up to +-power/2 of the circle, saturation and value by up to +-power/2
    (one generator per sample), on the batch's device: OpenCV's float HSV conversions, in tensors."""
    shifts = ((torch.stack([torch.rand(3, generator=g) for g in gens]) * 2 - 1) * power / 2).to(batch.device)
    h, s, v = _bgr_to_hsv(batch.float().clamp(0, 1))
    h = torch.remainder(h + shifts[:, 0, None, None] * 360, 360)
    s = (s + shifts[:, 1, None, None]).clamp(0, 1)
    v = (v + shifts[:, 2, None, None]).clamp(0, 1)
    return _hsv_to_bgr(h, s, v).clamp(0, 1).to(batch.dtype)


def _bgr_to_hsv(bgr: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """cv2.COLOR_BGR2HSV for float images: hue in degrees [0, 360), saturation and value in [0, 1]."""
    b, g, r = bgr.unbind(1)
    v = torch.maximum(torch.maximum(b, g), r)
    diff = v - torch.minimum(torch.minimum(b, g), r)
    s = torch.where(v > 0, diff / v.clamp(min=1e-30), torch.zeros_like(v))
    d = torch.where(diff > 0, 60 / diff.clamp(min=1e-30), torch.zeros_like(diff))
    h = torch.where(v == r, (g - b) * d, torch.where(v == g, 120 + (b - r) * d, 240 + (r - g) * d))
    return torch.where(h < 0, h + 360, h), s, v


def _hsv_to_bgr(h: torch.Tensor, s: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """cv2.COLOR_HSV2BGR for float images (hue in degrees)."""
    h6 = torch.remainder(h / 60, 6)
    sector = h6.floor()
    f = h6 - sector
    p, q, t = v * (1 - s), v * (1 - s * f), v * (1 - s * (1 - f))
    # (r, g, b) per sector 0..5: (v,t,p) (q,v,p) (p,v,t) (p,q,v) (t,p,v) (v,p,q)
    choices = torch.stack([v, t, p, q])  # indices 0..3
    table = torch.tensor([[0, 1, 2], [3, 0, 2], [2, 0, 1], [2, 3, 0], [1, 2, 0], [0, 2, 3]], device=h.device)
    idx = table[sector.long().clamp(0, 5)]  # (B, H, W, 3) as r, g, b
    rgb = torch.gather(choices.permute(1, 2, 3, 0), -1, idx)
    return rgb.flip(-1).permute(0, 3, 1, 2)  # to B, 3 (BGR), H, W
