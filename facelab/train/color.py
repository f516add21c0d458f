"""Colour augmentation for SAEHD's src faces: colour transfer toward dst faces (ct_mode) and
random hue/saturation/value shifts (random_hsv_power). Runs on the CPU with OpenCV, per batch."""

from __future__ import annotations

import cv2
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
    (one generator per sample)."""
    shifts = (torch.stack([torch.rand(3, generator=g) for g in gens]) * 2 - 1) * power / 2
    imgs = _to_np(batch)
    out = np.empty_like(imgs)
    for i, (img, (dh, ds, dv)) in enumerate(zip(imgs, shifts.tolist(), strict=True)):
        hsv = cv2.cvtColor(np.clip(img, 0, 1), cv2.COLOR_BGR2HSV)
        hsv[..., 0] = (hsv[..., 0] + dh * 360) % 360
        hsv[..., 1] = np.clip(hsv[..., 1] + ds, 0, 1)
        hsv[..., 2] = np.clip(hsv[..., 2] + dv, 0, 1)
        out[i] = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    return _to_torch(np.clip(out, 0, 1), batch)
