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

import math

import torch
from torch import nn

from facelab.train.augment import generator

_POOL_SLACK = 1 << 20
_CPU_CHUNK = 1 << 19  # elements: four 2 MB slices stay in cache


def _flat(t: torch.Tensor) -> torch.Tensor:
    """A 1-D view of a dense tensor in memory order (channels_last weights included)."""
    return t.view(-1) if t.is_contiguous() else t.as_strided((t.numel(),), (1,))


class LRDropout:
    def __init__(self, params: list[torch.Tensor], keep: float, seed: int):
        n = sum(p.numel() for p in params)
        g = generator(seed, "lr-dropout-pool")
        pool = torch.rand(n + _POOL_SLACK, generator=g) < keep
        self.pool = pool.to(params[0].device)
        self.shapes = [p.shape for p in params]
        self.sizes = [p.numel() for p in params]
        self.seed = seed

    def masks(self, step: int, into: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Each weight's keep mask for `step`: views of the pool, or of `into` (a bool tensor of all
        the weights' size) after this step's slice is copied there, as a captured step (graphs.py)
        reads its masks from one fixed place."""
        offset = int(torch.randint(0, _POOL_SLACK, (1,), generator=generator(self.seed, "lr-dropout", step)))
        flat = self.pool[offset : offset + sum(self.sizes)]
        if into is not None:
            flat = into.copy_(flat)
        return [m.view(s) for m, s in zip(torch.split(flat, self.sizes), self.shapes, strict=True)]


WARMUP_ITERS = 100  # lr_schedule: iterations of the linear warm-up
DECAY_FROM = 0.6  # lr_schedule: the share of the budget after which the rate falls
DECAY_TO = 0.1  # lr_schedule: the rate at the end of the budget, as a share of the peak


def schedule_factor(iteration: int, elapsed_s: float, target_iter: int, budget_s: float) -> float:
    """The lr_schedule option's multiplier: a linear warm-up to the recipe's rate, then (when the run
    has an iteration or time budget) a cosine fall to DECAY_TO over the budget's last 40 %. The
    budget's share is the larger of iterations done and time spent; past the budget it stays low."""
    warm = min(1.0, (iteration + 1) / WARMUP_ITERS)
    shares = [iteration / target_iter if target_iter else 0.0, elapsed_s / budget_s if budget_s else 0.0]
    done = min(1.0, max(shares))
    if done <= DECAY_FROM:
        return warm
    fall = (1 + math.cos(math.pi * (done - DECAY_FROM) / (1 - DECAY_FROM))) / 2
    return warm * (DECAY_TO + (1 - DECAY_TO) * fall)


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

    def _state_lists(self) -> list[list[torch.Tensor]]:
        """The per-parameter state tensors, one list per kind, in the order `_update` takes them."""
        return [self.acc]

    def _state(self, i: int) -> list[torch.Tensor]:
        return [states[i] for states in self._state_lists()]

    def _follow_layouts(self) -> None:
        """State tensors in their parameter's memory order. The chunked step pairs elements by
        memory position, and a model can change layout after its optimiser was made (`--precision
        auto` choosing channels_last or not), which would pair a weight with another's state."""
        for states in self._state_lists():
            for i, p in enumerate(self.params):
                if states[i].stride() != p.stride():
                    states[i] = torch.empty_like(p).copy_(states[i])

    def _update(self, p, g, state, keep, lr: float) -> None:
        (a,) = state
        a.mul_(self.rho).addcmul_(g, g, value=1 - self.rho)
        p.addcdiv_(g * keep if keep is not None else g, a.sqrt().add_(self.eps), value=-lr)

    def _update_all(self, params, grads, states, keeps, lr: float) -> None:
        """`_update` for every parameter at once, in multi-tensor kernels (a handful of launches per
        step on a GPU, instead of five per parameter)."""
        (acc,) = states
        torch._foreach_mul_(acc, self.rho)
        torch._foreach_addcmul_(acc, grads, grads, value=1 - self.rho)
        self._apply(params, grads, acc, keeps, lr)

    def _apply(self, params, num, second, keeps, lr: float | torch.Tensor) -> None:
        denom = torch._foreach_sqrt(second)
        torch._foreach_add_(denom, self.eps)
        if keeps is not None:
            num = torch._foreach_mul(num, [k.to(n.dtype) for k, n in zip(keeps, num, strict=True)])
        # w -= (num * lr) / denom: lr may be a tensor on the device (a captured step reads it there),
        # and a float gives the very same float32 product.
        num = torch._foreach_mul(num, lr)
        torch._foreach_addcdiv_(params, num, denom, value=-1.0)

    @torch.no_grad()
    def step(self, step: int, lr: float | torch.Tensor | None = None, foreach: bool | None = None,
             keeps: list[torch.Tensor] | None = None) -> None:  # fmt: skip
        """One update. On a GPU (or with foreach=True) all parameters go through multi-tensor
        kernels; on a CPU each is updated in cache-sized chunks, which is faster there. A captured
        step (graphs.py) passes `lr` as a 0-dim device tensor and the keep masks it fills itself."""
        lr = self.lr if lr is None else lr
        self._follow_layouts()
        masks = keeps if keeps is not None else (
            self.dropout.masks(step) if self.dropout is not None else [None] * len(self.params))  # fmt: skip
        if foreach is None:
            foreach = self.params[0].device.type == "cuda"
        if foreach:
            live = [i for i, p in enumerate(self.params) if p.grad is not None]
            states = [[self._state(i)[k] for i in live] for k in range(len(self._state(0)))]
            # The chunked path applies each keep mask in memory order: so does this one.
            keeps = ([_flat(masks[i]).as_strided(self.params[i].shape, self.params[i].stride()) for i in live]
                     if self.dropout is not None else None)  # fmt: skip
            self._update_all([self.params[i] for i in live], [self.params[i].grad for i in live], states,
                             keeps, lr)  # fmt: skip
            return
        for i, (p, keep) in enumerate(zip(self.params, masks, strict=True)):
            if p.grad is None:
                continue
            # On a CPU the update is memory-bound: doing all of it per cache-sized chunk reads each
            # tensor once instead of once per operation (54 ms instead of 85-135 ms for Quick96).
            chunk = _CPU_CHUNK if p.device.type == "cpu" else p.numel()
            grad = p.grad if p.grad.stride() == p.stride() else torch.empty_like(p).copy_(p.grad)
            flat = [_flat(t) for t in (p, grad, *self._state(i))]
            keep_flat = keep.view(-1) if keep is not None else None
            for j in range(0, p.numel(), chunk):
                pc, gc, *sc = (t[j : j + chunk] for t in flat)
                self._update(pc, gc, sc, keep_flat[j : j + chunk] if keep is not None else None, lr)

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


class AdaBelief(RMSprop):
    """The reference's AdaBelief, without bias correction:
    m = b1*m + (1-b1)*g;  v = b2*v + (1-b2)*(g-m)^2;  w -= lr * m / (sqrt(v) + eps) [* dropout mask]."""

    name = "adabelief"

    def __init__(self, named_params: list[tuple[str, nn.Parameter]], lr: float, beta1: float = 0.9,
                 beta2: float = 0.999, eps: float = 1e-6, lr_dropout: float = 1.0,
                 seed: int = 0):  # fmt: skip
        super().__init__(named_params, lr, eps=eps, lr_dropout=lr_dropout, seed=seed)
        self.beta1, self.beta2 = beta1, beta2
        self.m = [torch.zeros_like(p) for p in self.params]

    def _state_lists(self) -> list[list[torch.Tensor]]:
        return [self.m, self.acc]

    def _update(self, p, g, state, keep, lr: float) -> None:
        m, v = state
        m.mul_(self.beta1).add_(g, alpha=1 - self.beta1)
        diff = g - m
        v.mul_(self.beta2).addcmul_(diff, diff, value=1 - self.beta2)
        p.addcdiv_(m * keep if keep is not None else m, v.sqrt().add_(self.eps), value=-lr)

    def _update_all(self, params, grads, states, keeps, lr: float) -> None:
        m, v = states
        torch._foreach_mul_(m, self.beta1)
        torch._foreach_add_(m, grads, alpha=1 - self.beta1)
        diff = torch._foreach_sub(grads, m)
        torch._foreach_mul_(v, self.beta2)
        torch._foreach_addcmul_(v, diff, diff, value=1 - self.beta2)
        self._apply(params, m, v, keeps, lr)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return super().state_tensors() | {f"m/{n}": m for n, m in zip(self.names, self.m, strict=True)}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor]) -> None:
        super().load_state_tensors(tensors)
        for n, m in zip(self.names, self.m, strict=True):
            if f"m/{n}" not in tensors:
                raise ValueError(f"optimizer state lacks m/{n}")
            m.copy_(tensors[f"m/{n}"])


OPTIMIZERS = {"rmsprop": RMSprop, "adabelief": AdaBelief}
