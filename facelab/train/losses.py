"""Losses, always in float32: SSIM's variance terms lose all precision in bf16 and go NaN."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def _gaussian(size: int, sigma: float, device: torch.device) -> torch.Tensor:
    x = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2
    k = torch.exp(-(x**2) / (2 * sigma**2))
    return k / k.sum()


def _separable(x: torch.Tensor, k: torch.Tensor, pad: int) -> torch.Tensor:
    c = x.shape[1]
    if pad:
        x = F.pad(x, (pad, pad, pad, pad))
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def gaussian_blur(x: torch.Tensor, radius: float) -> torch.Tensor:
    """Blur with sigma = radius, zero padding (as the reference blurs masks)."""
    size = max(3, 2 * math.ceil(2 * radius) + 1)
    return _separable(x.float(), _gaussian(size, radius, x.device), size // 2)


def dssim(a: torch.Tensor, b: torch.Tensor, filter_size: int, sigma: float = 1.5) -> torch.Tensor:
    """(1 - SSIM) / 2 per sample, SSIM averaged over channels and valid positions; inputs in [0, 1]."""
    a, b = a.float(), b.float()
    k = _gaussian(filter_size, sigma, a.device)
    c1, c2 = 0.01**2, 0.03**2
    mu_a, mu_b = _separable(a, k, 0), _separable(b, k, 0)
    var_a = _separable(a * a, k, 0) - mu_a**2
    var_b = _separable(b * b, k, 0) - mu_b**2
    cov = _separable(a * b, k, 0) - mu_a * mu_b
    luminance = (2 * mu_a * mu_b + c1) / (mu_a**2 + mu_b**2 + c1)
    contrast_structure = (2 * cov + c2) / (var_a + var_b + c2)
    ssim = (luminance * contrast_structure).mean(dim=(1, 2, 3))
    return (1 - ssim) / 2


def mse(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return (a.float() - b.float()).pow(2).mean(dim=(1, 2, 3))


def gradient_loss(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-sample mean absolute difference of the horizontal and vertical pixel differences: DSSIM
    and MSE barely notice a blurred edge (a small error spread over few pixels); this term does."""
    a, b = a.float(), b.float()
    dx = (a[..., :, 1:] - a[..., :, :-1]) - (b[..., :, 1:] - b[..., :, :-1])
    dy = (a[..., 1:, :] - a[..., :-1, :]) - (b[..., 1:, :] - b[..., :-1, :])
    return dx.abs().mean(dim=(1, 2, 3)) + dy.abs().mean(dim=(1, 2, 3))


def masked_face_loss(
    pred: torch.Tensor, pred_mask: torch.Tensor, target: torch.Tensor, target_mask: torch.Tensor,
    detail: float = 0.0,
) -> torch.Tensor:  # fmt: skip
    """Per-sample 10*DSSIM + 10*MSE on the mask-weighted face, plus 10*MSE of the mask, plus
    `detail`*10*gradient_loss of the face (facelab's option; 0 in the reference).

    The target mask is blurred (radius res/32) so the face edge is learnt softly; the reference
    trains Quick96 (and SAEHD below 256 px) with this loss.
    """
    res = target.shape[-1]
    blurred = gaussian_blur(target_mask[:, :1], max(1, res // 32))
    t, p = target.float() * blurred, pred.float() * blurred
    loss = 10 * dssim(t, p, filter_size=int(res / 11.6)) + 10 * mse(t, p)
    if detail:
        loss = loss + detail * 10 * gradient_loss(t, p)
    return loss + 10 * mse(blurred, pred_mask)


def soft_face_mask(masks: torch.Tensor) -> torch.Tensor:
    """The face hull (channel 0 of `masks`) blurred by res/32 and doubled below 0.5: 1 inside the
    face, falling off softly outside it. SAEHD's loss weight, and what its extra terms mask with."""
    return gaussian_blur(masks[:, :1].float(), max(1, masks.shape[-1] // 32)).clamp(0, 0.5) * 2


def saehd_face_loss(
    pred: torch.Tensor, pred_mask: torch.Tensor, target: torch.Tensor, masks: torch.Tensor,
    masked: bool, eyes_mouth_prio: bool, blur_out_mask: bool = False, two_windows: bool = False,
    detail: float = 0.0,
) -> torch.Tensor:  # fmt: skip
    """Per-sample SAEHD loss: DSSIM (one window below 256 px, two from 256 up) + 10*MSE on the face
    (mask-weighted when `masked`), `detail`*10*gradient_loss, 300*MAE on eyes and mouth when
    prioritised, 10*MSE of the mask.

    `masks` holds the face hull (channel 0) and the eyes/mouth region (channel 1). The face is
    weighted by soft_face_mask.
    """
    res = target.shape[-1]
    face_mask = masks[:, :1].float()
    soft = soft_face_mask(masks)
    t, p = target.float(), pred.float()
    if blur_out_mask:  # outside the face, learn only a blur of the surroundings
        hard = (face_mask > 0.5).float()
        sigma = max(1.0, res / 128)
        around = gaussian_blur(t * hard, sigma) / gaussian_blur(hard, sigma).clamp_min(1e-4)
        t = t * hard + around * (1 - hard)
    if masked:
        t, p = t * soft, p * soft
    if res < 256 and not two_windows:
        loss = 10 * dssim(t, p, filter_size=int(res / 11.6))
    else:
        loss = 5 * dssim(t, p, filter_size=int(res / 11.6)) + 5 * dssim(t, p, filter_size=int(res / 23.2))
    loss = loss + 10 * mse(t, p)
    if detail:
        loss = loss + detail * 10 * gradient_loss(t, p)
    if eyes_mouth_prio:
        em = gaussian_blur(masks[:, 1:].float(), max(1, res // 32)) * (face_mask > 0.5)
        em = em / em.amax(dim=(1, 2, 3), keepdim=True).clamp_min(1e-6)
        loss = loss + 300 * (em * (t - p).abs()).mean(dim=(1, 2, 3))
    return loss + 10 * mse(soft, pred_mask)
