"""The `ema` option: an exponential moving average of the network's weights.

Each iteration moves the average a step toward the weights just trained, with decay
min(ema, (1 + n) / (10 + n)) at iteration n, so the first iterations are not averaged with the random
initial weights. The average is saved beside the weights (models.folder.EMA prefix), and what merge,
export and the preview use when the model has one; training itself goes on from the raw weights.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from facelab.models.folder import EMA


class WeightAverage:
    def __init__(self, model: nn.Module, decay: float, saved: dict[str, torch.Tensor] | None = None):
        """The average of `model`'s floating-point tensors, from `saved` (a checkpoint's weights) when
        they hold one of the same shapes, else starting at the weights as they are."""
        self.decay = decay
        self.names = [k for k, v in model.state_dict().items() if v.is_floating_point()]
        # The parameter and buffer objects themselves: a change of memory layout replaces their data,
        # not them, so they are looked up once rather than through state_dict() every iteration.
        tensors = dict(model.named_parameters()) | dict(model.named_buffers())
        self._tensors = [tensors[n] for n in self.names]
        saved = saved or {}
        self.average = []
        for name, t in zip(self.names, self._live(), strict=True):
            old = saved.get(EMA + name)
            start = old if old is not None and old.shape == t.shape else t
            self.average.append(torch.empty_like(t).copy_(start))
        self._shadow: nn.Module | None = None
        self._model = model

    @torch.no_grad()
    def update(self, iteration: int) -> None:
        decay = min(self.decay, (1 + iteration) / (10 + iteration))
        torch._foreach_lerp_(self.average, self._live(), 1 - decay)

    def _live(self) -> list[torch.Tensor]:
        """The weights as they are now."""
        return [t.detach() for t in self._tensors]

    def weights(self) -> dict[str, torch.Tensor]:
        """The average under the EMA prefix, for the checkpoint."""
        return {EMA + n: t for n, t in zip(self.names, self.average, strict=True)}

    def module(self) -> nn.Module:
        """A copy of the network holding the average (for the preview); made once, refreshed per call."""
        if self._shadow is None:
            self._shadow = copy.deepcopy(self._model).eval()
        state = dict(zip(self.names, self.average, strict=True))
        self._shadow.load_state_dict(state, strict=False)
        return self._shadow
