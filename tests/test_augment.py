"""The batched augmentation against the per-sample code it replaced: same draws, same pixels.

The per-sample versions below are the reference (what the trainer ran before the augmentation was
batched), kept here as the oracle: a resumed run and a run from an older checkpoint see the same
batches."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
import torch
import torch.nn.functional as F

from facelab.train.augment import AugmentSpec, augment, grid_sample, sample_generators, xseg_input_augment
from facelab.train.color import hsv_jitter
from facelab.train.losses import gaussian_blur


def _per_sample_field(res: int, g: torch.Generator) -> torch.Tensor:
    cell = res // (2 ** int(torch.randint(1, 4, (1,), generator=g)))
    points = res // cell + 1
    coarse = torch.zeros(2, points, points)
    coarse[:, 1:-1, 1:-1] = torch.randn(2, points - 2, points - 2, generator=g) * (cell * 0.24 * 2 / res)
    fine = F.interpolate(coarse[None], size=(res + cell, res + cell), mode="bilinear", align_corners=False)[0]
    half = cell // 2
    return fine[:, half : half + res, half : half + res]


def _per_sample_augment(images, face_masks, spec, gens, warp):
    b, _, res, _ = images.shape
    u = torch.stack([torch.rand(5, generator=g) for g in gens]) * 2 - 1
    angle = u[:, 0] * math.radians(spec.rotation_deg)
    scale = 1 + u[:, 1] * spec.scale
    shift = u[:, 2:4] * spec.shift * 2
    flip = (u[:, 4] + 1) / 2 < spec.flip_prob if spec.random_flip else torch.zeros(b, dtype=torch.bool)
    fields = torch.stack([_per_sample_field(res, g) for g in gens]) if warp and spec.random_warp else None
    c = (torch.arange(res, dtype=torch.float32) * 2 + 1) / res - 1
    y, x = torch.meshgrid(c, c, indexing="ij")
    q = torch.stack([x, y], dim=-1).expand(b, res, res, 2).clone()
    q[..., 0] = torch.where(flip[:, None, None], -q[..., 0], q[..., 0])
    q = q - shift[:, None, None, :]
    cos, sin = torch.cos(angle), torch.sin(angle)
    rot = torch.stack([torch.stack([cos, sin], -1), torch.stack([-sin, cos], -1)], -2)
    p = torch.einsum("bij,bhwj->bhwi", rot, q) / scale[:, None, None, None]
    pixels = images.float() / 255
    target = grid_sample(pixels, p, "bicubic", "border").clamp_(0, 1)
    mask = grid_sample(face_masks.float() / 255, p, "bilinear", "zeros")
    if fields is None:
        return target, target, mask
    disp = grid_sample(fields, p, "bilinear", "border").permute(0, 2, 3, 1)
    return grid_sample(pixels, p + disp, "bicubic", "border").clamp_(0, 1), target, mask


def _faces(n: int, res: int, seed: int = 0):
    """Smooth random faces (noise upsampled, so the bicubic warp is exercised on real gradients)."""
    g = torch.Generator().manual_seed(seed)
    coarse = torch.rand(n, 3, res // 8, res // 8, generator=g)
    images = (F.interpolate(coarse, size=(res, res), mode="bilinear") * 255).byte()
    masks = torch.zeros(n, 2, res, res, dtype=torch.uint8)
    masks[:, :, res // 4 : -res // 4, res // 4 : -res // 4] = 255
    return images, masks


@pytest.mark.parametrize("res", [64, 96, 100, 128, 224])
@pytest.mark.parametrize("flip", [False, True])
def test_batched_augment_equals_per_sample(res, flip):
    images, masks = _faces(12, res)
    spec = AugmentSpec(random_flip=flip)
    for warp in (True, False):
        gens = lambda: sample_generators(7, "src", "augment", start=40, count=12)  # noqa: E731
        batched = augment(images, masks, spec, gens(), warp)
        reference = _per_sample_augment(images, masks, spec, gens(), warp)
        for got, want in zip(batched, reference, strict=True):
            assert got.shape == want.shape
            assert float((got - want).abs().max()) < 2e-5
    # Every grid size came up, so each basis was compared (12 samples, 3 sizes).
    levels = {int(torch.randint(1, 4, (1,), generator=_after_uniforms(g))) for g in
              sample_generators(7, "src", "augment", start=40, count=12)}  # fmt: skip
    assert levels == {1, 2, 3}


def _after_uniforms(g: torch.Generator) -> torch.Generator:
    torch.rand(5, generator=g)
    return g


def _per_sample_xseg(images, masks, others, gens):
    b = images.shape[0]
    u = torch.stack([torch.rand(8, generator=g) for g in gens])
    composite = (u[:, 0] < 0.5).view(b, 1, 1, 1).float()
    keep = masks.clamp(0, 1) + (1 - composite) * (1 - masks.clamp(0, 1))
    out = images * keep + others.flip(-1).flip(-2) * (1 - keep)
    gain = 1 + (u[:, 1] - 0.5) * 0.6
    shift = (u[:, 2:5] - 0.5) * 0.3
    mean = out.mean(dim=(1, 2, 3), keepdim=True)
    out = (out - mean) * gain.view(b, 1, 1, 1) + mean + shift.view(b, 3, 1, 1)
    sigma = u[:, 5] * 2.0
    blurred = [gaussian_blur(out[i : i + 1], float(sigma[i])) if u[i, 6] >= 0.5 and sigma[i] >= 0.3
               else out[i : i + 1] for i in range(b)]  # fmt: skip
    return torch.cat(blurred).clamp_(0, 1)


def test_batched_xseg_augment_equals_per_sample():
    images, masks = _faces(16, 64)
    others, _ = _faces(16, 64, seed=1)
    x, o, m = images.float() / 255, others.float() / 255, masks[:, :1].float() / 255
    gens = lambda: sample_generators(3, "dst", "xseg", start=0, count=16)  # noqa: E731
    got, want = xseg_input_augment(x, m, o, gens()), _per_sample_xseg(x, m, o, gens())
    assert float((got - want).abs().max()) < 1e-5
    u = torch.stack([torch.rand(8, generator=g) for g in gens()])
    assert bool(((u[:, 6] >= 0.5) & (u[:, 5] * 2 >= 0.3)).any())  # some faces were blurred


def _per_sample_hsv(batch, power, gens):
    shifts = (torch.stack([torch.rand(3, generator=g) for g in gens]) * 2 - 1) * power / 2
    imgs = batch.permute(0, 2, 3, 1).numpy()
    out = np.empty_like(imgs)
    for i, (img, (dh, ds, dv)) in enumerate(zip(imgs, shifts.tolist(), strict=True)):
        hsv = cv2.cvtColor(np.clip(img, 0, 1), cv2.COLOR_BGR2HSV)
        hsv[..., 0] = (hsv[..., 0] + dh * 360) % 360
        hsv[..., 1] = np.clip(hsv[..., 1] + ds, 0, 1)
        hsv[..., 2] = np.clip(hsv[..., 2] + dv, 0, 1)
        out[i] = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    return torch.from_numpy(np.clip(out, 0, 1)).permute(0, 3, 1, 2)


def test_batched_hsv_jitter_equals_opencv_per_sample():
    images, _ = _faces(8, 64)
    batch = images.float() / 255
    batch[0] = 0.5  # grey: no hue at all
    batch[1, :, :8] = 1.0  # white rows
    gens = lambda: sample_generators(5, "hsv", start=3, count=8)  # noqa: E731
    got, want = hsv_jitter(batch, 0.3, gens()), _per_sample_hsv(batch, 0.3, gens())
    assert float((got - want).abs().max()) < 1e-4
    assert float((got - batch).abs().mean()) > 0.01  # it did shift colours
