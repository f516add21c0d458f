"""The GPU's training step without launch overhead: one CUDA graph, fed by a side stream.

An eager step of SAEHD launches thousands of small kernels (forward, losses, backward, the
optimiser), and at batch 8 a fast GPU finishes each before Python has launched the next: the step
is bound by launches, not by arithmetic. So after a few eager iterations the whole step (forward,
losses, backward, gradient clipping and the optimiser's update) is captured once in a CUDA graph
and then replayed with one launch per iteration. A graph reads and writes fixed memory, so every
iteration copies its batch into the captured input tensors, and what changes per iteration (the
learning rate, learning-rate dropout's keep masks, AMP's channel mix) is written into device
tensors the graph reads, outside it; the weights and optimiser state are updated in place, so a
save reads them as always.

The next batch is drawn and augmented on a second stream while the graph runs (Prefetcher), from
the same counters the eager loop would use: it is taken only if the run's counters are still the
ones it was drawn from, and they advance only when it is taken, so a save between the two holds
the counters of the iteration to come, and a resumed run draws the same batches.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING

import torch

from facelab import progress
from facelab.device import is_oom
from facelab.workspace import SIDES

if TYPE_CHECKING:
    from facelab.train.trainer import TrainingRun

WARMUP = 3  # eager iterations (on a side stream, as capture needs) before the step is captured


def unsupported(run: TrainingRun) -> str | None:
    """Why `run`'s step cannot be captured, or None when it can."""
    if run.device.type != "cuda":
        return "not on a CUDA GPU"
    if run.ranks.enabled:
        return "several processes (DDP's gradient exchange)"
    if run.recipe.loss == "xseg":
        return "XSeg trains eagerly"
    if run.extra_losses.nets:
        return "the GAN and true-face discriminators take steps of their own"
    return None


def on_side_stream(side: torch.cuda.Stream, work):
    """`work()` on `side`, ordered after and before the current stream's work (capture needs its
    warm-up off the default stream)."""
    here = torch.cuda.current_stream(side.device)
    side.wait_stream(here)
    with torch.cuda.stream(side):
        out = work()
    here.wait_stream(side)
    return out


def capture(work, device: torch.device):
    """`work` (no arguments) run once eagerly on a side stream, as capture needs, then captured;
    returns the graph's replay."""
    on_side_stream(torch.cuda.Stream(device), work)
    torch.cuda.synchronize(device)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        work()
    return graph.replay


class CapturedStep:
    """TrainingRun.eager_step, captured in a CUDA graph after WARMUP eager iterations."""

    def __init__(self, run: TrainingRun):
        self.run = run
        self.warmup_left = WARMUP
        self.side = torch.cuda.Stream(run.device)
        self.graph: torch.cuda.CUDAGraph | None = None
        self.replays = 0

    def step(self, batches) -> list[torch.Tensor]:
        """One iteration; the losses it returns are the graph's own outputs, which the next replay
        overwrites: read them before the next step."""
        run = self.run
        if self.graph is None and self.warmup_left:
            self.warmup_left -= 1
            return on_side_stream(self.side, lambda: run.eager_step(batches))
        if self.graph is None:
            try:
                self._capture(batches)
            except Exception as exc:
                if is_oom(exc):
                    raise
                progress.say(f"note: the step cannot be captured in a CUDA graph here ({exc}); "
                             "it runs eagerly")  # fmt: skip
                run.captured = None
                run.opt.zero_grad()
                return run.eager_step(batches)
        self._fill(batches)
        self.graph.replay()
        self.replays += 1
        run.iteration += 1
        return list(self.losses)

    def _capture(self, batches) -> None:
        run = self.run
        self.inputs = {s: tuple(t.clone() for t in batches[s]) for s in SIDES}
        self.lr = torch.zeros((), device=run.device)
        self.mix = run.step_mix().to(run.device) if run.model.kind == "amp" else None
        dropout = run.opt.dropout
        self.keep = None if dropout is None else torch.empty(sum(dropout.sizes), dtype=torch.bool,
                                                             device=run.device)  # fmt: skip
        keeps = None if dropout is None else dropout.masks(run.iteration, into=self.keep)
        run.opt.zero_grad()  # the graph's backward makes the gradients in its own memory
        torch.cuda.synchronize(run.device)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            total, src_loss, dst_loss, _, _ = run._forward(self.inputs, mix=self.mix, cache=False)
            run.update(total, self.lr, keeps)
        self.graph = graph
        self.losses = (src_loss.detach(), dst_loss.detach())

    def _fill(self, batches) -> None:
        """What this iteration's replay reads: its batch, learning rate, keep masks and mix."""
        run = self.run
        for s in SIDES:
            for static, fresh in zip(self.inputs[s], batches[s], strict=True):
                static.copy_(fresh)
        self.lr.fill_(run.learning_rate())
        if self.keep is not None:
            run.opt.dropout.masks(run.iteration, into=self.keep)
        if self.mix is not None:
            self.mix.copy_(run.step_mix())


class Prefetcher:
    """The next iteration's batches, made on a side stream while the current step runs."""

    def __init__(self, run: TrainingRun):
        self.run = run
        self.stream = torch.cuda.Stream(run.device) if run.device.type == "cuda" else None
        self.pending = None  # (the counters it was drawn from, the plan, the batches)
        self.used = 0

    def prefetch(self) -> None:
        run = self.run
        drawn, batch, warp = plan = run.plan_batch()
        with torch.cuda.stream(self.stream) if self.stream else contextlib.nullcontext():
            batches = run.make_batches(batch, warp)
        self.pending = ((run.iteration, dict(run.drawn), run.last_batch), plan, batches)

    def next_batches(self):
        """This iteration's batches: the prefetched ones if they were drawn for it, else fresh ones."""
        run = self.run
        pending, self.pending = self.pending, None
        if pending is None or pending[0] != (run.iteration, run.drawn, run.last_batch):
            return run.next_batches()
        (run.drawn, run.last_batch, _), batches = pending[1], pending[2]
        if self.stream is not None:
            here = torch.cuda.current_stream(run.device)
            here.wait_stream(self.stream)
            for t in (t for side in batches.values() for t in side):
                t.record_stream(here)  # made on the side stream, used and freed on this one
        self.used += 1
        return batches
