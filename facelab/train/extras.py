"""SAEHD's and AMP's extra loss terms: GAN (UNet patch discriminator on src; AMP: on src and dst),
true face (code discriminator, DF only), face style and background style, and AMP's always-on
dst background and total-variation terms. Each is off at power 0 and costs
nothing then. Discriminator weights and optimiser states are saved beside the model's under
the prefixes below, and a discriminator whose settings changed starts fresh.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from facelab.models import discriminators
from facelab.models.discriminators import CODE, GAN
from facelab.train.distributed import average_gradients
from facelab.train.losses import dssim, gaussian_blur, mse, soft_face_mask
from facelab.train.optim import OPTIMIZERS


def _bce(logits: torch.Tensor, target: float) -> torch.Tensor:
    logits = logits.float()
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def _tv(pred: torch.Tensor) -> torch.Tensor:
    """Total variation (mean squared neighbour differences)."""
    down, right = pred[..., 1:, :] - pred[..., :-1, :], pred[..., 1:] - pred[..., :-1]
    return down.pow(2).mean() + right.pow(2).mean()


def style_loss(a: torch.Tensor, b: torch.Tensor, radius: int, weight: float) -> torch.Tensor:
    """Per-sample distance of the channels' means and standard deviations after a blur."""
    a, b = gaussian_blur(a, radius), gaussian_blur(b, radius)
    ma, mb = a.mean(dim=(2, 3)), b.mean(dim=(2, 3))
    sa, sb = (a.var(dim=(2, 3)) + 1e-5).sqrt(), (b.var(dim=(2, 3)) + 1e-5).sqrt()
    return ((ma - mb).pow(2).sum(1) + (sa - sb).pow(2).sum(1)) * (weight / a.shape[1])


class ExtraLosses:
    """The optional loss terms a recipe turns on, with the discriminators and optimisers they need."""

    def __init__(self, recipe, model, seed: int, device: torch.device):
        self.recipe = recipe
        self.res = model.config["resolution"]
        self.optimizers = {}
        settings = ("gan_power", "gan_patch_size", "gan_dims", "true_face_power")
        nets = discriminators.for_options(model, {k: getattr(recipe, k) for k in settings})
        self.nets = {prefix: net.to(device) for prefix, net in nets.items()}
        for prefix, net in self.nets.items():
            opt = OPTIMIZERS[recipe.optimizer]
            self.optimizers[prefix] = opt(list(net.named_parameters()), lr=recipe.lr, seed=seed)

    @property
    def gan_sides(self) -> tuple[str, ...]:
        return ("src", "dst") if self.recipe.loss == "amp" else ("src",)

    @property
    def active(self) -> bool:
        """Whether generator_terms adds anything this run."""
        return bool(self.nets) or self.needs_swap or self.recipe.loss == "amp"

    @property
    def needs_swap(self) -> bool:
        return bool(self.recipe.face_style_power or self.recipe.bg_style_power)

    @property
    def needs_codes(self) -> bool:
        return CODE in self.nets

    @staticmethod
    def soft_masks(batches: dict) -> dict[str, torch.Tensor]:
        """Each side's soft face mask, made once per step for the generator and discriminator terms."""
        return {side: soft_face_mask(masks) for side, (_, _, masks) in batches.items()}

    def generator_terms(self, out: dict, batches: dict, soft: dict[str, torch.Tensor]) -> torch.Tensor:
        """Extra generator loss (a scalar) for this step; `soft` from soft_masks(batches)."""
        r = self.recipe
        _, target_src, _ = batches["src"]
        _, target_dst, _ = batches["dst"]
        total = torch.zeros((), device=target_src.device)
        soft_src, soft_dst = soft["src"], soft["dst"]
        if r.face_style_power:
            swap = out["swap"].float() * soft_dst
            weight = 10000 * r.face_style_power / 100
            total = total + style_loss(swap, target_dst * soft_dst, max(1, self.res // 8), weight).mean()
        if r.bg_style_power:
            p, anti = r.bg_style_power / 100, 1 - soft_dst
            a, b = out["swap"].float() * anti, target_dst * anti
            total = total + (10 * p * dssim(a, b, int(self.res / 11.6)) + 10 * p * mse(a, b)).mean()
        if r.loss == "amp":  # the reference's AMP keeps dst's background and smoothness
            pred, anti = out["dst"].float(), 1 - soft_dst
            total = total + 0.1 * mse(pred * anti, target_dst * anti).mean() + 1e-6 * _tv(pred)
        if GAN in self.nets:
            for side in self.gan_sides:
                fake = out[side].float() * soft[side] if r.masked_training else out[side].float()
                center, pixel = self.nets[GAN](fake)
                total = total + r.gan_power * (_bce(center, 1.0) + _bce(pixel, 1.0))
            if r.masked_training and r.loss != "amp":  # keep the GAN from painting speckles outside the face
                pred = out["src"].float()
                total = (
                    total
                    + 1e-6 * _tv(pred)
                    + 0.02 * mse(pred * (1 - soft_src), target_src * (1 - soft_src)).mean()
                )
        if CODE in self.nets:
            total = total + r.true_face_power * _bce(self.nets[CODE](out["src_code"].float()), 1.0)
        return total

    def discriminator_step(self, out: dict, batches: dict, soft: dict[str, torch.Tensor], step: int,
                           lr: float) -> None:  # fmt: skip
        for opt in self.optimizers.values():  # drop what the generator's loss left in the discriminators
            opt.zero_grad()
        if GAN in self.nets:
            terms = []
            for side in self.gan_sides:
                target, weight = batches[side][1], soft[side] if self.recipe.masked_training else 1.0
                real, fake = target * weight, out[side].detach().float() * weight
                (real_c, real_p), (fake_c, fake_p) = self.nets[GAN](real), self.nets[GAN](fake)
                terms += [_bce(real_c, 1.0), _bce(real_p, 1.0), _bce(fake_c, 0.0), _bce(fake_p, 0.0)]
            loss = sum(terms) / len(terms)  # over 4 terms (SAEHD) or 8 (AMP), as the reference
            loss.backward()
            average_gradients(self.nets[GAN].parameters())
            self.optimizers[GAN].step(step, lr)
            self.optimizers[GAN].zero_grad()
        if CODE in self.nets:
            d = self.nets[CODE]
            loss = _bce(d(out["dst_code"].detach().float()), 1.0) + _bce(
                d(out["src_code"].detach().float()), 0.0
            )
            loss.backward()
            average_gradients(d.parameters())
            self.optimizers[CODE].step(step, lr)
            self.optimizers[CODE].zero_grad()

    # ------------------------------------------------------------------ saving
    def weights(self) -> dict[str, torch.Tensor]:
        return {f"{p}{k}": v for p, net in self.nets.items() for k, v in net.state_dict().items()}

    def optimizer_state(self) -> dict[str, torch.Tensor]:
        return {f"{p}{k}": v for p, opt in self.optimizers.items() for k, v in opt.state_tensors().items()}

    def load(self, weights: dict[str, torch.Tensor], optimizer: dict[str, torch.Tensor]) -> list[str]:
        """Restore what matches; returns the discriminators that start fresh."""
        fresh = []
        for prefix, net in self.nets.items():
            w = {k[len(prefix) :]: v for k, v in weights.items() if k.startswith(prefix)}
            o = {k[len(prefix) :]: v for k, v in optimizer.items() if k.startswith(prefix)}
            try:
                net.load_state_dict(w)
                self.optimizers[prefix].load_state_tensors(o)
            except (RuntimeError, ValueError):
                fresh.append(prefix.rstrip("."))
        return fresh

