"""The reference tool's optimisers, with learning-rate dropout, as plain tensor state.

State is a flat {name: tensor} dict so it saves to safetensors beside the weights (no pickle).

Learning-rate dropout keeps each weight's update with probability p and zeroes it otherwise.
Drawing a fresh Bernoulli mask for 38 M weights every step costs 75-250 ms on two CPU cores,
more than a third of an iteration. Instead a pool of random keep-bits, n + 2^20 long, is
drawn once from the run's seed, and each step reads it from a random offset: every weight
still gets an independent keep/drop draw per step (a different pool position), for the cost
of a multiply.
"""

from __future__ import annotations

import torch
from torch import nn

from facelab.train.augment import generator

_POOL_SLACK = 1 << 20


class LRDropout:
    def __init__(self, params: list[torch.Tensor], keep: float, seed: int):
        n = sum(p.numel() for p in params)
        g = generator(seed, "lr-dropout-pool")
        pool = torch.rand(n + _POOL_SLACK, generator=g) < keep
        self.pool = pool.to(params[0].device)
        self.shapes = [p.shape for p in params]
        self.sizes = [p.numel() for p in params]
        self.seed = seed

    def masks(self, step: int) -> list[torch.Tensor]:
        offset = int(torch.randint(0, _POOL_SLACK, (1,), generator=generator(self.seed, "lr-dropout", step)))
        flat = self.pool[offset : offset + sum(self.sizes)]
        return [m.view(s) for m, s in zip(torch.split(flat, self.sizes), self.shapes, strict=True)]


class RMSprop:
    """a = rho*a + (1-rho)*g^2;  w -= lr * g / (sqrt(a) + eps) [* dropout mask]."""

    name = "rmsprop"

    def __init__(self, named_params: list[tuple[str, nn.Parameter]], lr: float, rho: float = 0.9,
                 eps: float = 1e-7, lr_dropout: float = 1.0, seed: int = 0):  # fmt: skip
        self.names = [n for n, _ in named_params]
        self.params = [p for _, p in named_params]
        self.lr, self.rho, self.eps = lr, rho, eps
        self.acc = [torch.zeros_like(p) for p in self.params]
        self.dropout = LRDropout(self.params, lr_dropout, seed) if lr_dropout < 1.0 else None

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    @torch.no_grad()
    def step(self, step: int) -> None:
        grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in self.params]
        torch._foreach_mul_(self.acc, self.rho)
        torch._foreach_addcmul_(self.acc, grads, grads, value=1 - self.rho)
        denom = torch._foreach_sqrt(self.acc)
        torch._foreach_add_(denom, self.eps)
        update = torch._foreach_div(grads, denom)
        if self.dropout is not None:
            torch._foreach_mul_(update, self.dropout.masks(step))
        torch._foreach_add_(self.params, update, alpha=-self.lr)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {f"acc/{n}": a for n, a in zip(self.names, self.acc, strict=True)}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        missing = [n for n in self.names if f"acc/{n}" not in tensors]
        if missing:
            raise ValueError(f"optimizer state lacks {len(missing)} tensors (e.g. {missing[0]})")
        for n, a in zip(self.names, self.acc, strict=True):
            t = tensors[f"acc/{n}"]
            if t.shape != a.shape:
                raise ValueError(
                    f"optimizer state for {n} has shape {tuple(t.shape)}, expected {tuple(a.shape)}"
                )
            a.copy_(t)
