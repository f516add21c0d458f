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
import json
import math
import os
import secrets
import shutil
import signal
import sys
import time
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path

import cv2
import torch

from facelab import __version__, progress
from facelab.errors import FacelabError
from facelab.fsutil import write_bytes_atomic
from facelab.info import has_amx
from facelab.models import create_model
from facelab.models.amp import FROZEN_PREFIXES
from facelab.models.blocks import glorot_
from facelab.models.registry import model_options as arch_options
from facelab.train import distributed, keys, model_options, preview
from facelab.train.augment import EpochSampler, YawSampler, augment, generator, sample_generators
from facelab.train.checkpoint import CONFIG, LIVE, PREVIEW, CheckpointError, ModelFolder
from facelab.train.colour import colour_transfer, hsv_jitter
from facelab.train.data import FaceSamples, load_samples
from facelab.train.extras import Extras, model_optimizer, model_weights
from facelab.train.history import LossHistory
from facelab.train.losses import masked_face_loss, saehd_face_loss
from facelab.train.optim import OPTIMIZERS
from facelab.train.recipes import Recipe, with_options
from facelab.workspace import Workspace

SIDES = ("src", "dst")
# TrainOptions fields that SAEHD and AMP keep as model options of these names.
FLAG_OPTIONS = {"target_iter": "target_iter", "backup_every_hours": "autobackup_hour",
                "preview_history": "write_preview_history"}  # fmt: skip


@dataclass
class TrainOptions:
    batch: int | None = None  # None: the saved value, else the recipe's
    target_iter: int = 0  # 0 = until stopped
    max_minutes: float = 0.0  # stop once the model's total training time reaches this (0 = no limit)
    save_every_min: float = 25.0
    backup_every_hours: float = 0.0  # 0 = only on `b`
    preview: bool = True
    preview_history: bool = False
    precision: str = "auto"  # auto | fp32 | bf16
    device: str = "auto"  # auto | cpu | cuda | cuda:N | mps
    seed: int | None = None  # for a new model; None = random
    from_model: str | None = None  # start a new model from this one's weights
    arch: dict = field(default_factory=dict)  # architecture overrides for a new model (tests, tiny models)
    status_every_s: float = 30.0  # without a terminal: one status line this often
    model_options: dict = field(default_factory=dict)  # --opt / --config values (SAEHD)
    override: bool = False  # let a resumed model's changeable options change (prompts on a terminal)
    pretrain_faces: Path | None = None  # aligned faces for pretrain (both sides)


@dataclass
class TrainResult:
    folder: Path
    iteration: int
    first_losses: list[float]  # mean src/dst loss over the first logged bucket
    last_losses: list[float]  # mean src/dst loss over the last iterations of this run
    ms_per_iter: float
    data_share: float  # fraction of iteration time spent making batches


def pick_device(choice: str) -> torch.device:
    if choice == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    dev = torch.device(choice)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise FacelabError("--device cuda: no CUDA GPU is visible to PyTorch; use --device cpu")
    if dev.type == "mps" and not torch.backends.mps.is_available():
        raise FacelabError("--device mps: Metal is not available here; use --device cpu")
    return dev


def pick_precision(choice: str, device: torch.device) -> str:
    """bf16 autocast only where it pays: a CPU with AMX tiles, or a CUDA GPU with bf16."""
    if choice != "auto":
        if choice == "bf16" and device.type == "cpu" and not has_amx():
            progress.say("note: this CPU has no AMX; bf16 will be much slower than fp32 here")
        return choice
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    if device.type == "cpu":
        return "bf16" if has_amx() else "fp32"
    return "fp32"


# How allocators report a failed allocation. oneDNN (PyTorch's CPU convolutions) says only that it
# "could not create a primitive" when its workspace cannot be allocated, so that counts as well.
OOM_MESSAGES = ("out of memory", "can't allocate memory", "could not create a primitive")


def is_oom(exc: BaseException) -> bool:
    text = str(exc).lower()
    return isinstance(exc, torch.OutOfMemoryError | MemoryError) or (
        isinstance(exc, RuntimeError) and any(m in text for m in OOM_MESSAGES)
    )


class Session:
    """One model being trained: network, optimiser, data, counters."""

    def __init__(self, ws: Workspace, recipe: Recipe, folder: ModelFolder, opts: TrainOptions,
                 ranks: distributed.Ranks = distributed.Ranks()):  # fmt: skip
        self.ws, self.folder, self.opts, self.ranks = ws, folder, opts, ranks
        self.options = self._resolve_options(recipe)
        if self.options:  # SAEHD and AMP keep these in the model (their flags set the options)
            self.opts = opts = replace(opts, **{f: self.options[k] for f, k in FLAG_OPTIONS.items()})
        self.recipe = with_options(recipe, self.options)
        self.device = pick_device(opts.device)
        self.precision = pick_precision(opts.precision, self.device)
        self.stop_requested = False
        if opts.batch is not None and opts.batch < 1:
            raise FacelabError(f"--batch {opts.batch}: the batch size must be at least 1")
        # Faces first: bad data should fail before minutes of model building.
        arch, face_type = self._planned()
        label = f"{recipe.class_name} ({face_type}, {arch['resolution']} px)"
        if self.recipe.pretrain:
            if not (opts.pretrain_faces and Path(opts.pretrain_faces).is_dir()):
                raise FacelabError(
                    "pretrain needs --pretrain-faces DIR: a folder of aligned faces of many people"
                )
            shared = load_samples(Path(opts.pretrain_faces), arch["resolution"], face_type, label).to(
                self.device
            )
            self.data = {s: shared for s in SIDES}  # the dst set is not used
        else:
            self.data = {
                s: load_samples(ws.aligned_dir(s), arch["resolution"], face_type, label).to(self.device)
                for s in SIDES
            }
        if folder.exists():
            self._resume()
        else:
            self._create()
        if self.options:
            self.batch = self.recipe.batch  # the batch_size option, possibly changed on resume
        if opts.batch is not None:
            self.batch = opts.batch
        if self.recipe.uniform_yaw:
            self.samplers = {s: YawSampler(self.data[s].yaws, self.seed, s) for s in SIDES}
        else:
            self.samplers = {s: EpochSampler(len(self.data[s]), self.seed, s) for s in SIDES}
        self._pick_preview_faces()

    def _resolve_options(self, base: Recipe) -> dict:
        """This model's options: saved (resume) or chosen now (new); {} for Quick96."""
        o = self.opts
        given = dict(o.model_options)
        if model_options.specs(base.model):  # a flag that is given wins over the same --opt
            given |= {k: getattr(o, f) for f, k in FLAG_OPTIONS.items() if getattr(o, f)}
        if self.folder.exists():
            saved = self.folder.read_json(CONFIG).get("options", {})
            return model_options.for_resumed_model(base.model, saved, given, o.override)
        if o.from_model:
            other = ModelFolder.of(self.folder.path.parent, o.from_model, base.class_name)
            saved = other.read_json(CONFIG).get("options", {}) if other.exists() else {}
            return model_options.for_resumed_model(base.model, saved, given, False)
        options = model_options.for_new_model(base.model, base.class_name, self.folder.path.parent, given)
        if options:
            keys = arch_options(base.model)
            self.opts.arch = {k: options[k] for k in keys if k in options} | self.opts.arch
        return options

    def _planned(self) -> tuple[dict, str]:
        """(architecture, face type) of the model this session will train, without building it."""
        if self.folder.exists():
            config = self.folder.read_json(CONFIG)
        elif self.opts.from_model:
            other = ModelFolder.of(self.folder.path.parent, self.opts.from_model, self.recipe.class_name)
            if not other.exists():
                raise FacelabError(f"--from {self.opts.from_model}: there is no model {other.path}")
            config = other.read_json(CONFIG)
        else:
            return arch_options(self.recipe.model, **self.opts.arch), self.recipe.face_type
        return config["architecture"], config.get("face_type", self.recipe.face_type)

    # ------------------------------------------------------------------ model and state
    def _build(self, arch: dict) -> None:
        torch.manual_seed(self.seed)  # initial weights follow the run's seed
        self.model = create_model(self.recipe.model, **arch).to(self.device)
        if self.precision == "bf16":
            self.model = self.model.to(memory_format=torch.channels_last)
        self.net = self.model  # what the training step calls: the model, or its DDP wrapper
        optimizer = OPTIMIZERS[self.recipe.optimizer]
        # AMP's inters keep their random initial weights, as in the reference.
        params = [(n, p) for n, p in self.model.named_parameters() if not n.startswith(FROZEN_PREFIXES)]
        self.opt = optimizer(params, lr=self.recipe.lr, lr_dropout=self.recipe.lr_dropout, seed=self.seed)
        self.extras = Extras(self.recipe, self.model, self.seed, self.device)

    def distribute(self) -> None:
        """Wrap the model in DDP: a collective step, so every rank calls it at the same point."""
        if self.ranks.enabled:
            ids = [self.device] if self.device.type == "cuda" else None
            self.net = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)

    def _create(self) -> None:
        self.seed = self.opts.seed if self.opts.seed is not None else secrets.randbits(62)
        arch = dict(self.opts.arch)
        reused = None
        if self.opts.from_model:
            ckpt = ModelFolder.of(
                self.folder.path.parent, self.opts.from_model, self.recipe.class_name
            ).load()
            arch = {k: v for k, v in ckpt.config["architecture"].items() if k != "name"}
            reused = self.opts.from_model
        self._build(arch)
        if reused:
            self.model.load_state_dict(model_weights(ckpt.weights))
            self.opt.load_state_tensors(model_optimizer(ckpt.optimizer))
            self.extras.load(ckpt.weights, ckpt.optimizer)
        self.config = {
            "model": self.recipe.model,
            "class": self.recipe.class_name,
            "face_type": self.recipe.face_type,
            "architecture": self.model.config,
            "training": self.recipe.to_json(),
            "options": self.options,
            "created": datetime.now().isoformat(timespec="seconds"),
            "facelab": __version__,
            "torch": torch.__version__,
        }
        self.iteration, self.elapsed = 0, 0.0
        self.batch = self.recipe.batch
        self.drawn = {s: 0 for s in SIDES}  # samples drawn so far per side (all ranks together)
        self.last_batch: dict | None = None
        self.history = LossHistory(2)
        self.preview_faces: dict[str, list[str]] = {}
        self.reused_from = reused

    def _resume(self) -> None:
        ckpt = self.folder.load()
        self.config, state = ckpt.config, ckpt.state
        if self.config.get("model") != self.recipe.model:
            raise FacelabError(
                f"{self.folder} is a {self.config.get('model')} model, not {self.recipe.model}"
            )
        self.seed = int(state["seed"])
        self._build({k: v for k, v in self.config["architecture"].items() if k != "name"})
        try:
            self.model.load_state_dict(model_weights(ckpt.weights))
        except RuntimeError as exc:
            raise CheckpointError(f"{self.folder} does not match its config.json ({exc})") from None
        saved_optimizer = self.config.get("training", {}).get("optimizer", "rmsprop")
        if saved_optimizer == self.recipe.optimizer:
            try:
                self.opt.load_state_tensors(model_optimizer(ckpt.optimizer))
            except ValueError as exc:
                raise CheckpointError(
                    f"{self.folder}: optimizer.safetensors does not match ({exc})"
                ) from None
        else:
            progress.say(
                f"optimiser changed from {saved_optimizer} to {self.recipe.optimizer}: its state starts fresh"
            )
        was_pretraining = bool(self.config.get("options", {}).get("pretrain"))
        for name in self.extras.load(ckpt.weights, ckpt.optimizer):
            progress.say(f"the {name} discriminator is new or changed: it starts fresh")
        self.config |= {"options": self.options, "training": self.recipe.to_json()}
        self.iteration, self.elapsed = int(state["iteration"]), float(state["elapsed_s"])
        self.batch = int(state["batch"])
        self.drawn = dict(state["drawn"])
        self.last_batch = state.get("last_batch")
        self.history = LossHistory.from_json(state["history"])
        self.preview_faces = state.get("preview_faces", {})
        self.reused_from = state.get("reused_from")
        if was_pretraining and not self.recipe.pretrain:
            self._end_pretraining()

    def _end_pretraining(self) -> None:
        """As the reference: the identity-carrying inters start again, and so does the count."""
        inters = ["inter"] if self.model.kind == "df" else ["inter_AB", "inter_B"]
        for name in inters:
            glorot_(getattr(self.model, name))
        self.opt = type(self.opt)(list(self.model.named_parameters()), lr=self.recipe.lr,
                                  lr_dropout=self.recipe.lr_dropout, seed=self.seed)  # fmt: skip
        self.iteration, self.history = 0, LossHistory(2)
        self.drawn, self.last_batch = {s: 0 for s in SIDES}, None
        progress.say(f"pretraining ended: {', '.join(inters)} re-initialised, iteration reset to 0")

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

    def _pick_preview_faces(self) -> None:
        rows = max(1, min(4, self.batch, 800 // self.model.config["resolution"]))
        self.preview_idx = {}
        for s in SIDES:
            names = self.data[s].names
            index = {n: i for i, n in enumerate(names)}
            chosen = [index[n] for n in self.preview_faces.get(s, []) if n in index][:rows]
            if len(chosen) < min(rows, len(names)):
                perm = torch.randperm(len(names), generator=generator(self.seed, s, "preview")).tolist()
                chosen += [i for i in perm if i not in chosen][: rows - len(chosen)]
            self.preview_idx[s] = chosen
            self.preview_faces[s] = [names[i] for i in chosen]

    # ------------------------------------------------------------------ one iteration
    def autocast(self):
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
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
            images = colour_transfer(images, self.data["dst"].images[pick.to(self.device)], masks, r.ct_mode)
        gens = sample_generators(self.seed, side, "augment", start=first, count=size)
        warped, target, mask = augment(images, masks, r.augment_for(side), gens, warp)
        if side == "src" and r.hsv_power:
            hsv = sample_generators(self.seed, "hsv", start=first, count=size)
            warped = hsv_jitter(warped, r.hsv_power, hsv)
        return warped, target, mask

    def next_batches(self) -> dict[str, tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Fresh warped batches, or (every n-th iteration) the last batch again without the warp."""
        every = self.recipe.repeat_unwarped_every
        repeat = every and self.iteration % every == 0 and self.last_batch is not None
        if not repeat:
            self.last_batch = {"start": dict(self.drawn), "size": self.batch}
            self.drawn = {s: self.drawn[s] + self.batch * self.ranks.world for s in SIDES}
        lb = self.last_batch
        return {s: self._side_batch(s, lb["start"][s], lb["size"], warp=not repeat) for s in SIDES}

    def loss(self, pred, pred_mask, target, masks) -> torch.Tensor:
        r = self.recipe
        if r.loss == "saehd":
            return saehd_face_loss(pred, pred_mask, target, masks, r.masked_training, r.eyes_mouth_prio,
                                   r.blur_out_mask)  # fmt: skip
        if r.loss == "amp":  # as SAEHD's, with both DSSIM windows at every size
            return saehd_face_loss(pred, pred_mask, target, masks, True, r.eyes_mouth_prio, r.blur_out_mask,
                                   two_windows=True)  # fmt: skip
        return masked_face_loss(pred, pred_mask, target, masks)

    def learning_rate(self) -> float:
        """The reference's cosine cycle that comes with learning-rate dropout (SAEHD)."""
        if not self.recipe.lr_cycle:
            return self.recipe.lr
        return self.recipe.lr * (math.cos(2 * math.pi * self.iteration / self.recipe.lr_cycle) + 1) / 2

    def train_step(self, batches) -> list[float]:
        """One optimiser step; returns this rank's [src loss, dst loss]."""
        (warped_src, target_src, mask_src), (warped_dst, target_dst, mask_dst) = (
            batches["src"],
            batches["dst"],
        )
        if self.precision == "bf16":
            warped_src = warped_src.contiguous(memory_format=torch.channels_last)
            warped_dst = warped_dst.contiguous(memory_format=torch.channels_last)
        with self.autocast():
            mix = {}
            if self.model.kind == "amp":  # a random channel mix per sample, by its row in the whole batch
                rows = sample_generators(self.seed, "mix", self.iteration, start=self.ranks.rank * self.batch,
                                         count=warped_src.shape[0])  # fmt: skip
                mix["mix"] = self.model.random_mix(rows)
            out = self.net(warped_src, warped_dst, swap=self.extras.needs_swap,
                             with_codes=self.extras.needs_codes, **mix)  # fmt: skip
        # Losses in float32, outside autocast.
        src_loss = self.loss(out["src"], out["src_mask"], target_src, mask_src).mean()
        dst_loss = self.loss(out["dst"], out["dst_mask"], target_dst, mask_dst).mean()
        total = src_loss + dst_loss
        if self.extras.active:
            soft = self.extras.soft_masks(batches)
            total = total + self.extras.generator_terms(out, batches, soft)
        total.backward()
        src_loss, dst_loss = src_loss.detach(), dst_loss.detach()
        if self.recipe.clipgrad:
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), 1.0)
        lr = self.learning_rate()
        self.opt.step(self.iteration, lr)
        if self.extras.nets:
            self.extras.discriminator_step(out, batches, soft, self.iteration, lr)
        self.opt.zero_grad()
        self.iteration += 1
        return [src_loss.item(), dst_loss.item()]

    # ------------------------------------------------------------------ outputs
    @torch.no_grad()
    def render_preview(self):
        faces = {s: self.data[s].images[self.preview_idx[s]].float().div(255) for s in SIDES}
        with self.autocast():
            out = self.model(faces["src"], faces["dst"])
        title = f"{self.recipe.class_name} '{self.folder.name}'"
        points = self.history.points()
        if self.model.kind == "amp":
            legend = "src src->src dst / dst->dst swap masked | dst->dst, morph .25-1"
            return preview.compose(title, self.iteration, points, self._amp_grid(faces, out), legend)
        columns = [faces["src"], out["src"], faces["dst"], out["dst"], out["swap"]]
        masked = None
        if self.recipe.loss == "saehd":  # the reference's second preview: everything through its mask
            hull = {s: self.data[s].masks[self.preview_idx[s], :1].float().div(255) for s in SIDES}
            masked = [faces["src"] * hull["src"], out["src"] * out["src_mask"], faces["dst"] * hull["dst"],
                      out["dst"] * out["dst_mask"],
                      out["swap"] * out["swap_mask"] * out["dst_mask"]]  # fmt: skip
            masked = [preview.to_uint8(c) for c in masked]
        grid = preview.rows_grid([preview.to_uint8(c) for c in columns], masked)
        return preview.compose(title, self.iteration, points, grid, preview.ROWS_LEGEND)

    def _amp_grid(self, faces: dict, out: dict):
        """The reference's AMP previews for the first preview face: a 2x3 grid at morph 1.0, and
        dst->dst with the swap at each morph value of the list."""
        dst = faces["dst"][:1]
        with self.autocast():
            swaps = {m: self.model.swap(dst, morph=m) for m in preview.MORPHS}
        face, mask, dst_mask = swaps[1.0]

        def img(t):
            return preview.to_uint8(t[:1])[0]

        cells = [("src", img(faces["src"])), ("src->src", img(out["src"])), ("dst", img(dst)),
                 ("dst->dst", img(out["dst"])), ("swap 1.0", img(face)),
                 ("swap masked", img(face * mask * dst_mask))]  # fmt: skip
        grid = preview.labelled_grid(cells, 3)
        morphs = preview.labelled_grid(
            [("dst->dst", img(out["dst"]))] + [(f"morph {m:g}", img(swaps[m][0])) for m in preview.MORPHS], 3
        )
        return preview.side_by_side(grid, morphs)

    def write_preview(self) -> None:
        if not self.opts.preview:
            return
        ok, jpg = cv2.imencode(".jpg", self.render_preview(), [cv2.IMWRITE_JPEG_QUALITY, 92])
        if ok:
            write_bytes_atomic(self.folder.path / PREVIEW, jpg.tobytes(), fsync=False)

    def write_history_preview(self) -> None:
        folder = self.folder.path / "history"
        folder.mkdir(exist_ok=True)
        ok, jpg = cv2.imencode(".jpg", self.render_preview(), [cv2.IMWRITE_JPEG_QUALITY, 85])
        if ok:
            write_bytes_atomic(folder / f"{self.iteration:07d}.jpg", jpg.tobytes(), fsync=False)

    def write_live(self, ms_per_iter: float, running: bool) -> None:
        live = {"iteration": self.iteration, "ms_per_iter": round(ms_per_iter, 1), "batch": self.batch,
                "target_iter": self.opts.target_iter, "running": running, "pid": os.getpid(),
                "updated": time.time(), "points": self.history.points()}  # fmt: skip
        write_bytes_atomic(self.folder.path / LIVE, json.dumps(live).encode(), fsync=False)

    def summary(self) -> str:
        params = sum(p.numel() for p in self.model.parameters())
        arch = ", ".join(f"{k}={v}" for k, v in self.model.config.items() if k != "name")
        lines = [
            f"{self.recipe.class_name} model '{self.folder.name}'",
            f"iteration:      {self.iteration}",
            f"architecture:   {arch}",
            f"parameters:     {params / 1e6:.1f} M",
            f"face type:      {self.config['face_type']}",
            f"batch size:     {self.batch}",
            f"optimiser:      {self.recipe.optimizer} lr {self.recipe.lr:g}, "
            f"lr dropout keep {self.recipe.lr_dropout:g}",
            f"augmentation:   {self.recipe.augment}",
            f"device:         {self.device} ({self.precision})",
            f"faces:          src {len(self.data['src'])}, dst {len(self.data['dst'])}",
            f"training time:  {self.elapsed / 3600:.2f} h",
            f"created:        {self.config['created']} with facelab {self.config['facelab']}",
        ]
        if self.reused_from:
            lines.append(f"reused from:    {self.reused_from}")
        return "\n".join(lines) + "\n"

    def save(self) -> None:
        weights = self.model.state_dict() | self.extras.weights()
        optimizer = self.opt.state_tensors() | self.extras.optimizer_state()
        self.folder.save(self.config, weights, optimizer, self.state(),
                         self.summary())  # fmt: skip
        self.write_preview()


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


def _open_session(ws: Workspace, recipe: Recipe, folder: ModelFolder, opts: TrainOptions,
                  ranks: distributed.Ranks) -> Session:  # fmt: skip
    try:
        return Session(ws, recipe, folder, opts, ranks)
    except CheckpointError as exc:
        backups = folder.backups()
        hint = (
            f"; the latest autobackup is {backups[0][0].name} (iteration {backups[0][1].get('iteration')}): "
            f"restore it with `facelab models restore {folder.name}`"
            if backups
            else "; there is no autobackup to restore"
        )
        raise CheckpointError(f"{exc}{hint}") from None


def train(ws: Workspace, recipe: Recipe, name: str, opts: TrainOptions) -> TrainResult:
    ranks = distributed.from_env()
    opts = replace(opts, device=distributed.device_for(ranks, opts.device))
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    torch.set_num_threads(max(1, cores // ranks.local_world))
    folder = ModelFolder.of(ws.model_dir, name, recipe.class_name)
    distributed.setup(ranks, pick_device(opts.device))
    try:
        if not ranks.main:
            # Rank 0 resolves the options, creates or resumes the model and saves it; the others
            # then open that saved model as it is.
            distributed.barrier()
            plain = replace(opts, model_options={}, override=False, from_model=None, arch={}, seed=None)
            session = _open_session(ws, recipe, folder, plain, ranks)
            session.distribute()
            return _loop(session)
        new_folder = not folder.path.exists()
        try:
            with folder.lock() as note:
                if note:
                    progress.say(note)
                folder.recover()
                session = _open_session(ws, recipe, folder, opts, ranks)
                if ranks.enabled:
                    session.save()
                    distributed.barrier()
                    session.distribute()
                return _loop(session)
        finally:
            if new_folder and not folder.exists():  # failed before its first save: leave no empty model
                shutil.rmtree(folder.path, ignore_errors=True)
    finally:
        distributed.shutdown()


def _finished(s: Session, opts: TrainOptions) -> bool:
    return bool(opts.target_iter and s.iteration >= opts.target_iter) or bool(
        opts.max_minutes and s.elapsed >= opts.max_minutes * 60
    )


def _target_text(opts: TrainOptions) -> str:
    parts = [f"--target-iter {opts.target_iter}"] if opts.target_iter else []
    return ", ".join(parts + ([f"{opts.max_minutes:g} minutes of training"] if opts.max_minutes else []))


def _loop(s: Session) -> TrainResult:
    main, opts = s.ranks.main, s.opts
    status = StatusLine(opts.status_every_s, silent=not main)
    if _finished(s, opts):
        status.line(
            f"{s.folder} is at iteration {s.iteration}, which reaches the target ({_target_text(opts)}): "
            "raise it to train on"
        )
        return TrainResult(s.folder.path, s.iteration, [], [], 0.0, 0.0)
    status.line(
        f"{'Resuming' if s.iteration else 'Starting'} {s.recipe.class_name} '{s.folder.name}' at iteration "
        f"{s.iteration}: batch {s.batch}, {s.device} {s.precision}, faces src {len(s.data['src'])} / "
        f"dst {len(s.data['dst'])}"
        + (f", {s.ranks.world} processes" if s.ranks.enabled else "")
        + (" (Enter saves and exits; s save, b backup, p preview)" if keys.usable() else "")
    )
    if not s.iteration:
        status.line("Trying the first iteration. If it fails for memory, use a smaller --batch.")

    def request_stop(signum, _frame):
        s.stop_requested = True

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGINT, signal.SIGTERM)}
    last_save = last_backup = last_live = time.monotonic()
    ms = 0.0
    since_save: list[list[float]] = []
    run_losses: list[list[float]] = []
    data_time = step_time = 0.0
    first_iteration = s.iteration
    try:
        with keys.KeyReader(enabled=main) as reader:
            while True:
                t0 = time.perf_counter()
                try:
                    batches = s.next_batches()
                    t1 = time.perf_counter()
                    local = s.train_step(batches)
                except Exception as exc:
                    if is_oom(exc):
                        raise FacelabError(
                            f"out of memory at batch size {s.batch} on {s.device}: "
                            f"train with a smaller batch, e.g. --batch {max(1, s.batch // 2)}"
                        ) from exc
                    raise
                t2 = time.perf_counter()
                data_time, step_time = data_time + t1 - t0, step_time + t2 - t0
                s.elapsed += t2 - t0

                # One collective per iteration: the losses, anyone's signal, and rank 0's decision to
                # end (Enter or the target); saves, backups and previews are rank 0's alone.
                key = reader.poll() or (keys.take_command(s.folder.path) if main else None)
                now = time.monotonic()
                end = main and (key == "enter" or _finished(s, opts))
                agreed = distributed.agree(local + [float(s.stop_requested), float(end)], s.device)
                losses = [v / s.ranks.world for v in agreed[:2]]
                s.stop_requested, end = agreed[2] > 0, agreed[3] > 0
                s.history.add(s.iteration, losses)
                since_save.append(losses)
                run_losses.append(losses)
                ms = (t2 - t0) * 1000
                status.update(s.iteration, ms, *losses)
                if main and now - last_live >= 2.0:
                    s.write_live(ms, running=True)
                    last_live = now
                if main and opts.preview_history and opts.preview and s.iteration % 10 == 0:
                    s.write_history_preview()

                due = key == "s" or now - last_save >= opts.save_every_min * 60 or s.iteration == 1
                if main and (due or end or s.stop_requested):  # a new model saves at once
                    s.save()
                    last_save = now
                    means = [sum(v) / len(since_save) for v in zip(*since_save, strict=True)]
                    status.line(
                        f"[{time.strftime('%H:%M:%S')}] saved at #{s.iteration}: mean loss since last save "
                        f"src {means[0]:.4f} dst {means[1]:.4f}; "
                        f"{step_time / (s.iteration - first_iteration) * 1000:.0f} ms/iter, "
                        f"{data_time / step_time:.0%} waiting for data"
                    )
                    since_save = []
                    backup_due = (
                        opts.backup_every_hours and now - last_backup >= opts.backup_every_hours * 3600
                    )
                    if backup_due:
                        status.line(f"autobackup: {s.folder.backup()}")
                        last_backup = now
                if main and key == "b":
                    s.save()
                    status.line(f"backup: {s.folder.backup()}")
                elif main and key == "p":
                    s.write_preview()
                if end or s.stop_requested:
                    break
            if s.stop_requested:
                status.line(f"stopped at iteration {s.iteration}; saved")
            elif _finished(s, opts):
                status.line(f"reached the target ({_target_text(opts)}) at iteration {s.iteration}; saved")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if main:
            s.write_live(ms, running=False)
    n = len(run_losses)
    head, tail = run_losses[: max(1, n // 10)], run_losses[-max(1, n // 10) :]
    return TrainResult(
        s.folder.path,
        s.iteration,
        [sum(v) / len(head) for v in zip(*head, strict=True)],
        [sum(v) / len(tail) for v in zip(*tail, strict=True)],
        step_time / max(1, n) * 1000,
        data_time / step_time if step_time else 0.0,
    )
