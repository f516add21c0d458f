"""The training loop every model uses, readable top to bottom.

`train()` opens (or creates) `model/<name>_<Class>/`, loads both facesets once, then loops:
draw a batch (every n-th iteration re-uses the last one unwarped), forward under the chosen
precision, losses in float32, backward, optimiser step; it saves on a timer, at the target
iteration, on `s`/Enter, and on Ctrl-C or SIGTERM. A checkpoint holds the architecture, the
weights, the optimiser state, the iteration, the loss history and the random-number counters,
so a resumed run continues exactly where the saved one stopped. Under torchrun every rank runs
this same loop on its share of each batch (see distributed.py); they agree on the losses and on
every save/stop decision once per iteration, and only rank 0 writes.
"""

from __future__ import annotations

import contextlib
import math
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import record_function

from facelab import progress
from facelab.device import PRECISIONS, check_device_name, is_oom, pick_device, pick_precision
from facelab.errors import FacelabError
from facelab.models.folder import PREVIEW, CheckpointError, ModelFolder
from facelab.options import Option
from facelab.precision import choose
from facelab.train import distributed, graphs, keys, model_options, report, setup
from facelab.train.augment import augment, sample_generators, xseg_input_augment
from facelab.train.color import color_transfer, hsv_jitter
from facelab.train.data import FaceSamples
from facelab.train.ema import WeightAverage
from facelab.train.extras import ExtraLosses
from facelab.train.history import LossHistory
from facelab.train.losses import masked_face_loss, saehd_face_loss
from facelab.train.optim import schedule_factor
from facelab.train.recipes import Recipe
from facelab.train.threads import ThreadTuner
from facelab.workspace import SIDES, Workspace

# `facelab train`'s settings as flags (and `run`'s, and the UI's). target_iter, autobackup_hour and
# write_preview_history are also SAEHD/AMP model options, with the very same specs.
OPTIONS = [
    Option("batch", int, 4, "batch size", range=(1, 4096)),
    model_options.SHARED["target_iter"],
    Option("max_minutes", float, 0.0, "stop once the model has trained this many minutes, all runs together "
           "(0 = no limit)", range=(0.0, 10.0**7), flags=("--minutes",)),
    Option("save_every_min", float, 25.0, "autosave interval in minutes", range=(0.01, 100_000.0),
           flags=("--save-every",)),
    model_options.SHARED["autobackup_hour"],
    Option("preview", bool, True, f"write {PREVIEW} at every save", switch=True),
    model_options.SHARED["write_preview_history"],
    Option("precision", str, "auto", "auto: the faster of fp32 and bf16 for this model here, measured once",
           choices=PRECISIONS),
    Option("device", str, "auto", "auto, cpu, cuda, cuda:N or mps (auto: a GPU if there is one)",
           check=check_device_name),
    Option("seed", int, 0, "random seed for a new model", range=(0, 2**62)),
    Option("cuda_graph", bool, True, "on a CUDA GPU, capture the training step in a CUDA graph and replay it "
           "(one launch per iteration instead of thousands)", switch=True),
    Option("threads", int, 0, "CPU threads (0: all cores, one fewer at a time while other processes "
           "compete for them and that measures faster; a fixed count keeps runs bit-reproducible)",
           range=(0, 4096)),
]  # fmt: skip


@dataclass
class TrainOptions:
    batch: int | None = None  # None: the saved value, else the recipe's
    target_iter: int = 0  # 0 = until stopped
    max_minutes: float = 0.0  # stop once the model's total training time reaches this (0 = no limit)
    save_every_min: float = 25.0
    autobackup_hour: float = 0.0  # 0 = only on `b`
    preview: bool = True
    write_preview_history: bool = False
    precision: str = "auto"  # auto | fp32 | bf16
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    seed: int | None = None  # for a new model; None = random
    from_model: str | None = None  # start a new model from this one's weights
    arch: dict = field(default_factory=dict)  # architecture overrides for a new model (tests, tiny models)
    status_every_s: float = 30.0  # without a terminal: one status line this often
    model_options: dict = field(default_factory=dict)  # --opt / --config values
    override: bool = False  # let a resumed model's changeable options change (prompts on a terminal)
    pretrain_faces: Path | None = None  # aligned faces for pretrain (both sides)
    threads: int = 0  # CPU threads; 0 = all cores (this rank's share), tuned under load (train/threads.py)
    cuda_graph: bool = True  # capture the step in a CUDA graph where it can be (train/graphs.py)


@dataclass
class TrainResult:
    folder: Path
    iteration: int
    first_losses: list[float]  # mean src/dst loss over the first logged bucket
    last_losses: list[float]  # mean src/dst loss over the last iterations of this run
    ms_per_iter: float
    data_share: float  # fraction of iteration time spent making batches
    step_ms: list[float] = field(default_factory=list)  # every iteration's time in this run
    threads: int = 0  # the CPU thread count at the end (train/threads.py may have changed it)
    replays: int = 0  # iterations run as a CUDA graph's replay (train/graphs.py)


class TrainingRun:
    """One model being trained: its network, optimiser, extra losses, faces and counters.
    `setup.prepare` opens it (options, faces, a new or resumed network); the methods below are
    one iteration: draw a batch, run the network, losses, step."""

    model_options: dict  # this model's options (Quick96: facelab's extras only)
    recipe: Recipe
    device: torch.device
    precision: str
    channels_last: bool  # the model's weights and inputs in NHWC memory order
    data: dict[str, FaceSamples]
    model: torch.nn.Module
    net: torch.nn.Module  # what the step calls: the model, or its DDP wrapper
    opt: object  # the optimiser (train/optim.py)
    extra_losses: ExtraLosses
    ema: WeightAverage | None  # the weights' moving average (the ema option)
    config: dict  # config.json
    seed: int
    iteration: int
    elapsed: float  # seconds of training, all runs together
    batch: int
    drawn: dict[str, int]  # samples drawn so far per side (all ranks together)
    last_batch: dict | None  # where the last fresh batch started, to repeat it unwarped
    history: LossHistory
    preview_faces: dict[str, list[str]]
    preview_idx: dict[str, list[int]]
    samplers: dict
    reused_from: str | None

    def __init__(self, ws: Workspace, recipe: Recipe, folder: ModelFolder, train_options: TrainOptions,
                 ranks: distributed.Ranks = distributed.Ranks()):  # fmt: skip
        self.ws, self.folder, self.train_options, self.ranks = ws, folder, train_options, ranks
        self.stop_requested = False
        self.precision_choice = None
        setup.prepare(self, recipe)
        if train_options.precision == "auto" and self.device.type in ("cpu", "cuda") and not ranks.enabled:
            out_of_memory = False
            try:
                self.measure_precision()  # (several ranks would have to agree: they keep the rule)
            except Exception as exc:  # out of memory: the first iteration reports it, with the batch to use
                if not is_oom(exc):
                    raise
                out_of_memory = True
            if out_of_memory:  # outside the handler, whose traceback still holds the batch's tensors
                self.precision_choice = None
                self.precision = pick_precision("auto", self.device)
                self._drop_grads()
                try:
                    self._layout(self.precision == "bf16")
                except Exception as exc:
                    raise (self.out_of_memory() if is_oom(exc) else exc) from exc
        not_graphed = graphs.unsupported(self)
        self.captured = graphs.CapturedStep(self) if train_options.cuda_graph and not not_graphed else None

    def out_of_memory(self) -> FacelabError:
        return FacelabError(
            f"out of memory at batch size {self.batch} on {self.device}: "
            f"train with a smaller batch, e.g. --batch {max(1, self.batch // 2)}"
        )

    def distribute(self) -> None:
        """Wrap the model in DDP: a collective step, so every rank calls it at the same point."""
        if self.ranks.enabled:
            ids = [self.device] if self.device.type == "cuda" else None
            self.net = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)

    def state(self) -> dict:
        return {
            "iteration": self.iteration,
            "elapsed_s": self.elapsed,
            "seed": self.seed,
            "batch": self.batch,
            "drawn": self.drawn,
            "ranks": self.ranks.world,
            "last_batch": self.last_batch,
            "history": self.history.to_json(),
            "preview_faces": self.preview_faces,
            "reused_from": self.reused_from,
            "saved_at": datetime.now().isoformat(timespec="seconds"),
            "precision": self.precision,
            "device": str(self.device),
            "faces": {s: len(self.data[s]) for s in SIDES},
        }

    # ------------------------------------------------------------------ precision
    def measure_precision(self) -> None:
        """`--precision auto`: time forward, losses and backward of the first batch (drawn by position,
        so nothing of the run's own draws is used up) in each candidate, keep the fastest
        (facelab.precision), and put the model in its memory layout. Weights, optimiser and random
        draws are untouched: there is no optimiser step, and the gradients are dropped. A step that
        will run as a CUDA graph is timed as one: eager launches would hide what bf16 gains."""
        batches = {s: self._side_batch(s, 0, self.batch, warp=True) for s in SIDES}
        graphed = self.train_options.cuda_graph and not graphs.unsupported(self)
        mix = self.step_mix().to(self.device) if self.model.kind == "amp" else None
        dev = self.device
        replays = {}  # the candidate being timed: its captured step

        def step() -> None:
            self._drop_grads()
            if self.recipe.loss == "xseg":
                sum(self._xseg_forward(batches)).backward()
            else:
                self._forward(batches, mix=mix, cache=not graphed)[0].backward()

        def timed(precision: str, channels_last: bool) -> float:
            nonlocal graphed
            self.precision = precision
            self._layout(channels_last)
            if graphed and (precision, channels_last) not in replays:
                replays.clear()  # one candidate's graph (and its memory) at a time
                try:
                    replays[precision, channels_last] = graphs.capture(step, dev)
                except Exception as exc:
                    if is_oom(exc):
                        raise
                    graphed = False
                    self.train_options = replace(self.train_options, cuda_graph=False)
                    progress.say(f"note: the step cannot be captured in a CUDA graph here ({exc}); "
                                 "it runs eagerly")  # fmt: skip
            call = replays.get((precision, channels_last), step) if graphed else step
            start = time.perf_counter()
            call()
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            return time.perf_counter() - start

        bf16 = dev.type == "cpu" or torch.cuda.is_bf16_supported()
        config = self.config["architecture"] | {"recipe": self.recipe.class_name, "loss": self.recipe.loss}
        if graphed:  # timed as a graph: not the same decision as an eager run's
            config["cuda_graph"] = True
        self.precision_choice = choose("train", config, self.batch, dev, timed, bf16)
        replays.clear()
        self._drop_grads()
        self.precision = self.precision_choice.precision
        self._layout(self.precision_choice.channels_last)

    def _layout(self, channels_last: bool) -> None:
        """The model's weights (and so its inputs) in NHWC or NCHW memory order."""
        self.channels_last = channels_last
        self.model.to(memory_format=torch.channels_last if channels_last else torch.contiguous_format)

    def _drop_grads(self) -> None:
        for net in (self.model, *self.extra_losses.nets.values()):
            net.zero_grad(set_to_none=True)

    # ------------------------------------------------------------------ one iteration
    def autocast(self, cache: bool = True):
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16, cache_enabled=cache)
        return contextlib.nullcontext()

    def _side_batch(self, side: str, start: int, size: int, warp: bool):
        """This rank's share of one batch: sample positions start + rank*size onwards, each with
        its own random draws, so the split over ranks does not change what is drawn."""
        data: FaceSamples = self.data[side]
        first = start + self.ranks.rank * size
        idx = self.samplers[side].indices(first, size).to(self.device)
        images, masks = data.images[idx], data.masks[idx]
        r = self.recipe
        if side == "src" and r.ct_mode != "none":  # recolour toward random dst faces
            gens = sample_generators(self.seed, "ct", start=first, count=size)
            pick = torch.cat([torch.randint(len(self.data["dst"]), (1,), generator=g) for g in gens])
            images = color_transfer(images, self.data["dst"].images[pick.to(self.device)], masks, r.ct_mode)
        gens = sample_generators(self.seed, side, "augment", start=first, count=size)
        warped, target, mask = augment(images, masks, r.augment_for(side), gens, warp)
        if r.loss == "xseg":  # the mask must not depend on colour, blur or what is behind the face
            gens = sample_generators(self.seed, side, "xseg", start=first, count=size)
            pick = torch.cat([torch.randint(len(self.data[side]), (1,), generator=g) for g in gens])
            others = self.data[side].images[pick.to(self.device)].float().div(255)  # backgrounds
            warped = xseg_input_augment(warped, mask[:, :1], others, gens)
        if side == "src" and r.hsv_power:
            hsv = sample_generators(self.seed, "hsv", start=first, count=size)
            warped = hsv_jitter(warped, r.hsv_power, hsv)
        return warped, target, mask

    def plan_batch(self) -> tuple[dict[str, int], dict, bool]:
        """This iteration's batch without drawing it: (the sample counters after it, where it starts
        and its size, whether it is warped). A fresh warped batch, or (every n-th iteration) the last
        batch again without the warp."""
        every = self.recipe.repeat_unwarped_every
        if every and self.iteration % every == 0 and self.last_batch is not None:
            return self.drawn, self.last_batch, False
        drawn = {s: self.drawn[s] + self.batch * self.ranks.world for s in SIDES}
        return drawn, {"start": dict(self.drawn), "size": self.batch}, True

    def make_batches(self, batch: dict, warp: bool) -> dict[str, tuple[torch.Tensor, ...]]:
        """Each side's (network input, target, mask) for a planned batch."""
        return {s: self._side_batch(s, batch["start"][s], batch["size"], warp) for s in SIDES}

    def next_batches(self) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        self.drawn, self.last_batch, warp = self.plan_batch()
        return self.make_batches(self.last_batch, warp)

    def loss(self, pred, pred_mask, target, masks) -> torch.Tensor:
        r = self.recipe
        if r.loss == "saehd":
            return saehd_face_loss(pred, pred_mask, target, masks, r.masked_training, r.eyes_mouth_prio,
                                   r.blur_out_mask, detail=r.detail_loss)  # fmt: skip
        if r.loss == "amp":  # as SAEHD's, with both DSSIM windows at every size
            return saehd_face_loss(pred, pred_mask, target, masks, True, r.eyes_mouth_prio, r.blur_out_mask,
                                   two_windows=True, detail=r.detail_loss)  # fmt: skip
        return masked_face_loss(pred, pred_mask, target, masks, detail=r.detail_loss)

    def learning_rate(self) -> float:
        """The recipe's rate, times the reference's cosine cycle that comes with learning-rate dropout
        (SAEHD) and facelab's warm-up and decay (the lr_schedule option)."""
        lr = self.recipe.lr
        if self.recipe.lr_cycle:
            lr *= (math.cos(2 * math.pi * self.iteration / self.recipe.lr_cycle) + 1) / 2
        if self.recipe.lr_schedule:
            opts = self.train_options
            lr *= schedule_factor(self.iteration, self.elapsed, opts.target_iter, opts.max_minutes * 60)
        return lr

    def step_mix(self) -> torch.Tensor:
        """AMP: this iteration's random channel mix per sample, by its row in the whole batch (CPU)."""
        rows = sample_generators(self.seed, "mix", self.iteration, start=self.ranks.rank * self.batch,
                                 count=self.batch)  # fmt: skip
        return self.model.random_mix(rows)

    def _forward(self, batches, mix: torch.Tensor | None = None, cache: bool = True):
        """(total loss, src loss, dst loss, network outputs, soft masks) of one batch. `mix`: AMP's
        channel mix (default: step_mix()); `cache`: autocast's weight-cast cache, which a CUDA
        graph capture must do without."""
        (warped_src, target_src, mask_src), (warped_dst, target_dst, mask_dst) = (
            batches["src"],
            batches["dst"],
        )
        if self.channels_last:
            warped_src = warped_src.contiguous(memory_format=torch.channels_last)
            warped_dst = warped_dst.contiguous(memory_format=torch.channels_last)
        with self.autocast(cache):
            extra = {"mix": self.step_mix() if mix is None else mix} if self.model.kind == "amp" else {}
            with record_function("forward"):
                out = self.net(warped_src, warped_dst, swap=self.extra_losses.needs_swap,
                               with_codes=self.extra_losses.needs_codes, **extra)  # fmt: skip
        with record_function("loss"):  # in float32, outside autocast
            src_loss = self.loss(out["src"], out["src_mask"], target_src, mask_src).mean()
            dst_loss = self.loss(out["dst"], out["dst_mask"], target_dst, mask_dst).mean()
            total, soft = src_loss + dst_loss, None
            if self.extra_losses.active:
                soft = self.extra_losses.soft_masks(batches)
                total = total + self.extra_losses.generator_terms(out, batches, soft)
        return total, src_loss, dst_loss, out, soft

    def train_step(self, batches) -> list[float]:
        """One optimiser step; returns this rank's [src loss, dst loss]."""
        return [loss.item() for loss in self.launch_step(batches)]

    def launch_step(self, batches) -> list[torch.Tensor]:
        """One optimiser step, as a CUDA graph's replay where one is captured (graphs.py); returns
        this rank's [src loss, dst loss] as tensors, which on a GPU may still be being computed."""
        if self.recipe.loss == "xseg":
            return self._xseg_step(batches)
        losses = self.captured.step(batches) if self.captured is not None else self.eager_step(batches)
        if self.ema is not None:
            self.ema.update(self.iteration)
        return losses

    def eager_step(self, batches) -> list[torch.Tensor]:
        total, src_loss, dst_loss, out, soft = self._forward(batches)
        lr = self.learning_rate()
        self.update(total, lr)
        if self.extra_losses.nets:
            with record_function("discriminators"):
                self.extra_losses.discriminator_step(out, batches, soft, self.iteration, lr)
        self.opt.zero_grad()
        self.iteration += 1
        return [src_loss.detach(), dst_loss.detach()]

    def update(self, total: torch.Tensor, lr: float | torch.Tensor, keeps: list | None = None) -> None:
        """Backward and the optimiser's step (`keeps`: learning-rate dropout's masks, when given)."""
        with record_function("backward"):
            total.backward()
        with record_function("optimizer"):
            if self.recipe.clipgrad:
                torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
            self.opt.step(self.iteration, lr, keeps=keeps)

    def _xseg_forward(self, batches) -> list[torch.Tensor]:
        """XSeg: sigmoid cross-entropy of the predicted mask against the label mask, per side."""
        inputs = torch.cat([batches[s][0] for s in SIDES])
        if self.channels_last:
            inputs = inputs.contiguous(memory_format=torch.channels_last)
        with self.autocast():
            logits = self.net(inputs)
        return [
            F.binary_cross_entropy_with_logits(part.float(), batches[s][2][:, :1])
            for s, part in zip(SIDES, logits.split([batches[s][0].shape[0] for s in SIDES]), strict=True)
        ]

    def _xseg_step(self, batches) -> list[torch.Tensor]:
        losses = self._xseg_forward(batches)
        sum(losses).backward()
        if self.recipe.clipgrad:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        self.opt.step(self.iteration, self.learning_rate())
        self.opt.zero_grad()
        self.iteration += 1
        return [loss.detach() for loss in losses]

    def save(self) -> None:
        weights = self.model.state_dict() | self.extra_losses.weights()
        if self.ema is not None:
            weights |= self.ema.weights()
        optimizer = self.opt.state_tensors() | self.extra_losses.optimizer_state()
        self.folder.save(self.config, weights, optimizer, self.state(), report.summary(self))
        report.write_preview(self)


class StatusLine:
    """`[HH:MM:SS][#iteration][ms/iter][src loss][dst loss]`, in place on a terminal."""

    def __init__(self, every_s: float, silent: bool = False):
        self.tty = sys.stdout.isatty()
        self.every_s, self.last, self.silent = every_s, 0.0, silent

    def update(self, it: int, ms: float, src: float, dst: float) -> None:
        text = f"[{time.strftime('%H:%M:%S')}][#{it:06d}][{ms:04.0f}ms][{src:.4f}][{dst:.4f}]"
        if progress.is_quiet() or self.silent:
            return
        if self.tty:
            sys.stdout.write("\r" + text)
            sys.stdout.flush()
        elif time.monotonic() - self.last >= self.every_s:
            print(text, flush=True)
            self.last = time.monotonic()

    def line(self, text: str) -> None:
        if self.silent:
            return
        if self.tty:
            sys.stdout.write("\r\033[K")
        print(text, flush=True)


def _open_run(ws: Workspace, recipe: Recipe, folder: ModelFolder, opts: TrainOptions,
              ranks: distributed.Ranks) -> TrainingRun:  # fmt: skip
    try:
        return TrainingRun(ws, recipe, folder, opts, ranks)
    except CheckpointError as exc:
        raise CheckpointError(f"{exc}{folder.restore_hint()}") from None


def train(ws: Workspace, recipe: Recipe, name: str, opts: TrainOptions) -> TrainResult:
    ranks = distributed.from_env()
    opts = replace(opts, device=distributed.device_for(ranks, opts.device))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(opts.threads or max(1, cores // ranks.local_world))
    folder = ModelFolder.of(ws.model_dir, name, recipe.class_name)
    distributed.setup(ranks, pick_device(opts.device))
    try:
        if not ranks.main:
            # Rank 0 resolves the options, creates or resumes the model and saves it; the others
            # then open that saved model as it is.
            distributed.barrier()
            plain = replace(opts, model_options={}, override=False, from_model=None, arch={}, seed=None)
            run = _open_run(ws, recipe, folder, plain, ranks)
            run.distribute()
            return _loop(run)
        new_folder = not folder.path.exists()
        try:
            with folder.lock() as note:
                if note:
                    progress.say(note)
                folder.recover()
                run = _open_run(ws, recipe, folder, opts, ranks)
                if ranks.enabled:
                    run.save()
                    distributed.barrier()
                    run.distribute()
                return _loop(run)
        finally:
            if new_folder and not folder.exists():  # failed before its first save: leave no empty model
                shutil.rmtree(folder.path, ignore_errors=True)
    finally:
        distributed.shutdown()


def _finished(run: TrainingRun, opts: TrainOptions) -> bool:
    return bool(opts.target_iter and run.iteration >= opts.target_iter) or bool(
        opts.max_minutes and run.elapsed >= opts.max_minutes * 60
    )


def _target_text(opts: TrainOptions) -> str:
    parts = [f"--target-iter {opts.target_iter}"] if opts.target_iter else []
    return ", ".join(parts + ([f"{opts.max_minutes:g} minutes of training"] if opts.max_minutes else []))


def _loop(run: TrainingRun) -> TrainResult:
    main, opts = run.ranks.main, run.train_options
    status = StatusLine(opts.status_every_s, silent=not main)
    if _finished(run, opts):
        status.line(
            f"{run.folder} is at iteration {run.iteration}, which reaches the target ({_target_text(opts)}): "
            "raise it to train on"
        )
        return TrainResult(run.folder.path, run.iteration, [], [], 0.0, 0.0)
    status.line(
        f"{'Resuming' if run.iteration else 'Starting'} {run.recipe.class_name} '{run.folder.name}' at "
        f"iteration {run.iteration}: batch {run.batch}, {run.device} {run.precision}, faces src "
        f"{len(run.data['src'])} / dst {len(run.data['dst'])}"
        + (f", {run.ranks.world} processes" if run.ranks.enabled else "")
        + (" (Enter saves and exits; s save, b backup, p preview)" if keys.usable() else "")
    )
    if run.precision_choice is not None:
        status.line(run.precision_choice.line())
    if run.captured is not None:
        status.line(f"the step is captured in a CUDA graph after {graphs.WARMUP} iterations "
                    "(--no-cuda-graph runs it eagerly)")
    if not run.iteration:
        status.line("Trying the first iteration. If it fails for memory, use a smaller --batch.")

    def request_stop(signum, _frame):
        run.stop_requested = True

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    last_save = last_backup = last_live = time.monotonic()
    ms = 0.0
    since_save: list[list[float]] = []
    run_losses: list[list[float]] = []
    step_ms: list[float] = []
    data_time = step_time = 0.0
    first_iteration = run.iteration
    tuned = run.device.type == "cpu" and not opts.threads and not run.ranks.enabled
    tuner = ThreadTuner(torch.get_num_threads()) if tuned and torch.get_num_threads() > 1 else None
    # On a GPU the next batch is made while the step runs; on a CPU that would only compete for the cores.
    prefetcher = graphs.Prefetcher(run) if run.device.type == "cuda" else None
    failed = False
    try:
        with keys.KeyReader(enabled=main) as reader:
            while True:
                t0 = time.perf_counter()
                try:
                    with record_function("step"):  # the phases inside are named for benchmarks/train.py
                        with record_function("data"):
                            batches = prefetcher.next_batches() if prefetcher else run.next_batches()
                        t1 = time.perf_counter()
                        losses_now = run.launch_step(batches)
                        if prefetcher:
                            prefetcher.prefetch()
                        local = [loss.item() for loss in losses_now]
                except Exception as exc:
                    if is_oom(exc):
                        raise run.out_of_memory() from exc
                    raise
                t2 = time.perf_counter()
                data_time, step_time = data_time + t1 - t0, step_time + t2 - t0
                run.elapsed += t2 - t0

                # One collective per iteration: the losses, anyone's signal, and rank 0's decision to
                # end (Enter or the target); saves, backups and previews are rank 0's alone.
                key = reader.poll() or (keys.take_command(run.folder.path) if main else None)
                now = time.monotonic()
                end = main and (key == "enter" or _finished(run, opts))
                agreed = distributed.agree(local + [float(run.stop_requested), float(end)], run.device)
                losses = [v / run.ranks.world for v in agreed[:2]]
                run.stop_requested, end = agreed[2] > 0, agreed[3] > 0
                run.history.add(run.iteration, losses)
                since_save.append(losses)
                run_losses.append(losses)
                ms = (t2 - t0) * 1000
                step_ms.append(ms)
                status.update(run.iteration, ms, *losses)
                if tuner and (change := tuner.after_step(ms)):
                    status.line(change)
                if main and now - last_live >= 2.0:
                    report.write_live(run, ms, running=True)
                    last_live = now
                if main and opts.write_preview_history and opts.preview and run.iteration % 10 == 0:
                    report.write_preview(run, history=True)

                due = key == "s" or now - last_save >= opts.save_every_min * 60 or run.iteration == 1
                if main and (due or end or run.stop_requested):  # a new model saves at once
                    run.save()
                    last_save = now
                    means = [sum(v) / len(since_save) for v in zip(*since_save, strict=True)]
                    status.line(
                        f"[{time.strftime('%H:%M:%S')}] saved at #{run.iteration}: mean loss since last save "
                        f"src {means[0]:.4f} dst {means[1]:.4f}; "
                        f"{step_time / (run.iteration - first_iteration) * 1000:.0f} ms/iter, "
                        f"{data_time / step_time:.0%} waiting for data"
                    )
                    since_save = []
                    backup_due = (
                        opts.autobackup_hour and now - last_backup >= opts.autobackup_hour * 3600
                    )
                    if backup_due:
                        status.line(f"autobackup: {run.folder.backup()}")
                        last_backup = now
                if main and key == "b":
                    run.save()
                    status.line(f"backup: {run.folder.backup()}")
                elif main and key == "p":
                    report.write_preview(run)
                if end or run.stop_requested:
                    break
            if run.stop_requested:
                status.line(f"stopped at iteration {run.iteration}; saved")
            elif _finished(run, opts):
                status.line(f"reached the target ({_target_text(opts)}) at iteration {run.iteration}; saved")
    except BaseException:
        failed = True
        raise
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if main:
            # After a failure (a disk gone read-only or full) this write fails too: the error to
            # report is the first one.
            with contextlib.suppress(OSError) if failed else contextlib.nullcontext():
                report.write_live(run, ms, running=False)
    n = len(run_losses)
    head, tail = run_losses[: max(1, n // 10)], run_losses[-max(1, n // 10) :]
    return TrainResult(
        run.folder.path,
        run.iteration,
        [sum(v) / len(head) for v in zip(*head, strict=True)],
        [sum(v) / len(tail) for v in zip(*tail, strict=True)],
        step_time / max(1, n) * 1000,
        data_time / step_time if step_time else 0.0,
        step_ms,
        torch.get_num_threads(),
        run.captured.replays if run.captured else 0,
    )
