"""Opening a training run: the model's options, both facesets, and the network, created fresh
(or from another model's weights) or resumed exactly from its folder.

`prepare(run)` fills in a `trainer.TrainingRun`; everything an iteration needs is then set.
"""

from __future__ import annotations

import contextlib
import math
import secrets
from dataclasses import replace
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from facelab import __version__, progress
from facelab.device import pick_device, pick_precision
from facelab.errors import FacelabError
from facelab.faces import meta
from facelab.faces.align import face_transform
from facelab.models.amp import FROZEN_PREFIXES
from facelab.models.blocks import glorot_
from facelab.models.folder import (
    CONFIG,
    OPTIMIZER,
    STATE,
    CheckpointError,
    ModelFolder,
    build_network,
    load_weights,
    network_weights,
)
from facelab.models.registry import model_options as arch_options
from facelab.train import model_options
from facelab.train.augment import EpochSampler, YawSampler, generator
from facelab.train.data import load_samples
from facelab.train.ema import WeightAverage
from facelab.train.extras import ExtraLosses
from facelab.train.history import LossHistory
from facelab.train.optim import OPTIMIZERS
from facelab.train.recipes import Recipe, with_options
from facelab.workspace import SIDES, image_files

if TYPE_CHECKING:
    from facelab.train.trainer import TrainingRun

# TrainOptions fields that SAEHD and AMP keep as model options (of the same names and specs).
MODEL_KEPT = ("target_iter", "autobackup_hour", "write_preview_history")


def prepare(run: TrainingRun, base: Recipe) -> None:
    """Options, device, faces, then the network (new or resumed), samplers and preview faces."""
    run.model_options = _resolve_options(run, base)
    # SAEHD and AMP keep these in the model (their flags set them); Quick96 and XSeg have none of them.
    changes = {k: run.model_options[k] for k in MODEL_KEPT if k in run.model_options}
    run.train_options = replace(run.train_options, **changes)
    opts = run.train_options
    run.recipe = with_options(base, run.model_options)
    run.device = pick_device(opts.device)
    run.precision = pick_precision(opts.precision, run.device)
    if run.device.type == "cuda":  # shapes are fixed for the whole run: let cuDNN time its algorithms once
        torch.backends.cudnn.benchmark = True
    if opts.batch is not None and opts.batch < 1:
        raise FacelabError(f"--batch {opts.batch}: the batch size must be at least 1")
    # Faces first: bad data should fail before minutes of model building.
    run.data = _load_faces(run)
    if run.folder.exists():
        _resume(run)
    else:
        _create(run)
    if "batch_size" in run.model_options:
        run.batch = run.recipe.batch  # the batch_size option, possibly changed on resume
    if opts.batch is not None:
        run.batch = opts.batch
    if run.recipe.uniform_yaw:
        run.samplers = {s: YawSampler(run.data[s].yaws, run.seed, s) for s in SIDES}
    else:
        run.samplers = {s: EpochSampler(len(run.data[s]), run.seed, s) for s in SIDES}
    _pick_preview_faces(run)


def _other(run: TrainingRun, base: Recipe) -> ModelFolder:
    """The model named by --from."""
    return ModelFolder.of(run.folder.path.parent, run.train_options.from_model, base.class_name)


def _resolve_options(run: TrainingRun, base: Recipe) -> dict:
    """This model's options: saved (resume) or chosen now (new); Quick96's are facelab's extras only."""
    o = run.train_options
    given = dict(o.model_options)
    known = model_options.specs(base.model)  # a flag that is given wins over the same --opt
    given |= {k: getattr(o, k) for k in MODEL_KEPT if getattr(o, k) and k in known}
    if run.folder.exists():
        saved = run.folder.read_json(CONFIG).get("options", {})
        return model_options.for_resumed_model(base.model, saved, given, o.override)
    if o.from_model:
        other = _other(run, base)
        saved = other.read_json(CONFIG).get("options", {}) if other.exists() else {}
        return model_options.for_resumed_model(base.model, saved, given, False)
    options = model_options.for_new_model(base.model, base.class_name, run.folder.path.parent, given)
    if options:
        keys = arch_options(base.model)
        o.arch = {k: options[k] for k in keys if k in options} | o.arch
    return options


def _planned(run: TrainingRun) -> tuple[dict, str]:
    """(architecture, face type) of the model this run will train, without building it."""
    if run.folder.exists():
        config = run.folder.read_json(CONFIG)
    elif run.train_options.from_model:
        other = _other(run, run.recipe)
        if not other.exists():
            raise FacelabError(f"--from {run.train_options.from_model}: there is no model {other.path}")
        config = other.read_json(CONFIG)
    else:
        return arch_options(run.recipe.model, **run.train_options.arch), run.recipe.face_type
    return config["architecture"], config.get("face_type", run.recipe.face_type)


def _load_faces(run: TrainingRun) -> dict:
    arch, face_type = _planned(run)
    label = f"{run.recipe.class_name} ({face_type}, {arch['resolution']} px)"
    pretrain_faces = run.train_options.pretrain_faces
    if run.recipe.pretrain:
        if not (pretrain_faces and Path(pretrain_faces).is_dir()):
            raise FacelabError(
                "pretrain needs --pretrain-faces DIR: a folder of aligned faces of many people"
            )
        shared = load_samples(Path(pretrain_faces), arch["resolution"], face_type, label).to(run.device)
        return {s: shared for s in SIDES}  # the dst set is not used
    if run.recipe.loss == "xseg":
        return _labelled_faces(run, arch["resolution"], face_type, label)
    data = {
        s: load_samples(run.ws.aligned_dir(s), arch["resolution"], face_type, label).to(run.device)
        for s in SIDES
    }
    if advice := resolution_advice(run.ws.aligned_dir("dst"), arch["resolution"], face_type):
        progress.say(advice)
    return data


UPSCALE_WARNING = 2.0  # dst faces this many times the model's resolution get the advice below
ADVICE_SAMPLE = 50  # faces whose size is read for it, evenly spaced (load_samples read them all already)


def face_size(faces: Path, face_type: str) -> float | None:
    """The median size in pixels of a faceset's faces in their frames, cropped as `face_type` (the
    side of the square the aligned crop covers); None without readable faces."""
    files = image_files(faces)
    metas = []
    for p in files[:: max(1, len(files) // ADVICE_SAMPLE)]:
        with contextlib.suppress(meta.MetadataError):
            metas.append(meta.read(p))
    if not metas:
        return None
    res = 256  # any: the crop's scale is in proportion
    scales = [1 / math.sqrt(abs(np.linalg.det(face_transform(m.source_landmarks, res, face_type)[:, :2])))
              for m in metas]  # fmt: skip
    return res * float(np.median(scales))


def resolution_advice(dst_faces: Path, res: int, face_type: str) -> str | None:
    """A line when the dst faces are much larger in their frames than the model renders them (the
    merge upscales the face that much, and no training makes an upscaled face sharp)."""
    size = face_size(dst_faces, face_type)
    if size is None:
        return None
    upscale = size / res
    if upscale < UPSCALE_WARNING:
        return None
    side = round(size)
    match = int(min(512, max(128, round(side / 32) * 32)))
    return (f"the dst faces fill about {side} px of their frames, {upscale:.1f}x this model's {res} px: the "
            f"merge upscales the face that much and it stays soft however long it trains. A SAEHD at a "
            f"matching resolution keeps the detail (slower per iteration): "
            f"facelab train --model saehd --name NAME --opt resolution={match}")


def _labelled_faces(run: TrainingRun, res: int, face_type: str, label: str) -> dict:
    """XSeg trains on the labelled faces of both sides; a side with none shares the other's."""
    data = {s: load_samples(run.ws.aligned_dir(s), res, face_type, label, labels=True) for s in SIDES}
    if not any(len(d) for d in data.values()):
        raise FacelabError(
            f"no labelled faces in {run.ws.aligned_dir('src')} or {run.ws.aligned_dir('dst')}: draw XSeg "
            "polygons on some faces in `facelab ui`, or `facelab xseg labels import FILE.json`"
        )
    for s in SIDES:
        if not len(data[s]):
            other = data["dst" if s == "src" else "src"]
            progress.say(f"no labelled {s} faces: both sides train on the {len(other)} labelled "
                         f"{'dst' if s == 'src' else 'src'} faces")  # fmt: skip
            data[s] = other
    return {s: d.to(run.device) for s, d in data.items()}


def _build(run: TrainingRun, config: dict) -> None:
    """The network `config` describes, its optimiser and its extra losses, on the run's device."""
    torch.manual_seed(run.seed)  # initial weights follow the run's seed
    run.model = build_network(config).to(run.device)
    run.channels_last = run.precision == "bf16"  # until `--precision auto` has measured
    if run.channels_last:
        run.model = run.model.to(memory_format=torch.channels_last)
    run.net = run.model  # what the training step calls: the model, or its DDP wrapper
    optimizer = OPTIMIZERS[run.recipe.optimizer]
    # AMP's inters keep their random initial weights, as in the reference.
    params = [(n, p) for n, p in run.model.named_parameters() if not n.startswith(FROZEN_PREFIXES)]
    run.opt = optimizer(params, lr=run.recipe.lr, lr_dropout=run.recipe.lr_dropout, seed=run.seed)
    run.extra_losses = ExtraLosses(run.recipe, run.model, run.seed, run.device)


def _create(run: TrainingRun) -> None:
    opts = run.train_options
    run.seed = opts.seed if opts.seed is not None else secrets.randbits(62)
    reused = None
    if opts.from_model:
        other = _other(run, run.recipe)
        ckpt = other.load()
        config = ckpt.config
        reused = opts.from_model
    else:
        config = {"architecture": {"name": run.recipe.model, **opts.arch}}
    _build(run, config)
    if reused:
        load_weights(run.model, other, ckpt.weights)
        run.opt.load_state_tensors(network_weights(ckpt.optimizer))
        run.extra_losses.load(ckpt.weights, ckpt.optimizer)
    run.config = new_config(run.recipe, run.model.config, run.model_options)
    run.iteration, run.elapsed = 0, 0.0
    run.batch = run.recipe.batch
    run.drawn = {s: 0 for s in SIDES}  # samples drawn so far per side (all ranks together)
    run.last_batch = None
    run.history = LossHistory(2)
    run.preview_faces = {}
    run.reused_from = reused
    run.ema = WeightAverage(run.model, run.recipe.ema) if run.recipe.ema else None


def new_config(recipe: Recipe, architecture: dict, options: dict) -> dict:
    """config.json of a new model (`recipe` already made from `options`)."""
    return {
        "model": recipe.model,
        "class": recipe.class_name,
        "face_type": recipe.face_type,
        "architecture": architecture,
        "training": recipe.to_json(),
        "options": options,
        "created": datetime.now().isoformat(timespec="seconds"),
        "facelab": __version__,
        "torch": torch.__version__,
    }


def new_state(batch: int, iteration: int = 0, history: LossHistory | None = None) -> dict:
    """state.json of a model that no facelab run has trained yet (an imported one): what `_resume`
    reads, with a fresh seed."""
    return {"iteration": iteration, "elapsed_s": 0.0, "seed": secrets.randbits(62), "batch": batch,
            "drawn": {s: 0 for s in SIDES}, "last_batch": None,
            "history": (history or LossHistory(2)).to_json(), "preview_faces": {}, "reused_from": None,
            "saved_at": datetime.now().isoformat(timespec="seconds")}  # fmt: skip


def _resume(run: TrainingRun) -> None:
    ckpt = run.folder.load()
    run.config, state = ckpt.config, ckpt.state
    if run.config.get("model") != run.recipe.model:
        raise FacelabError(f"{run.folder} is a {run.config.get('model')} model, not {run.recipe.model}")
    saved = saved_progress(run.folder, state)
    run.seed = saved["seed"]
    _build(run, run.config)
    load_weights(run.model, run.folder, ckpt.weights)
    saved_optimizer = run.config.get("training", {}).get("optimizer", "rmsprop")
    if not network_weights(ckpt.optimizer):  # an imported model without DeepFaceLab's optimiser file
        progress.say("the checkpoint has no optimiser state: it starts fresh")
    elif saved_optimizer == run.recipe.optimizer:
        try:
            run.opt.load_state_tensors(network_weights(ckpt.optimizer))
        except ValueError as exc:
            raise CheckpointError(f"{run.folder.file(OPTIMIZER)} does not match the model ({exc})") from None
    else:
        progress.say(
            f"optimiser changed from {saved_optimizer} to {run.recipe.optimizer}: its state starts fresh"
        )
    was_pretraining = bool(run.config.get("options", {}).get("pretrain"))
    for name in run.extra_losses.load(ckpt.weights, ckpt.optimizer):
        progress.say(f"the {name} discriminator is new or changed: it starts fresh")
    run.config |= {"options": run.model_options, "training": run.recipe.to_json()}
    run.iteration, run.elapsed, run.batch = saved["iteration"], saved["elapsed_s"], saved["batch"]
    run.drawn = saved["drawn"]
    run.last_batch, run.history = saved["last_batch"], saved["history"]
    run.preview_faces, run.reused_from = saved["preview_faces"], saved["reused_from"]
    # The average goes on from the saved one; a model that had none (or had the option off) starts it here.
    run.ema = WeightAverage(run.model, run.recipe.ema, ckpt.weights) if run.recipe.ema else None
    if was_pretraining and not run.recipe.pretrain:
        _end_pretraining(run)


def saved_progress(folder: ModelFolder, state: dict) -> dict:
    """What a resume takes from state.json (new_state's fields), checked: a CheckpointError names
    the file and the autobackup when a field is missing or of the wrong kind."""
    try:
        last = state.get("last_batch")
        out = {"seed": int(state["seed"]), "iteration": int(state["iteration"]), "batch": int(state["batch"]),
               "elapsed_s": float(state["elapsed_s"]), "drawn": {s: int(state["drawn"][s]) for s in SIDES},
               "history": LossHistory.from_json(state["history"]),
               "last_batch": None if last is None else
               {"start": {s: int(last["start"][s]) for s in SIDES}, "size": int(last["size"])},
               "preview_faces": {s: [str(n) for n in names] for s, names in
                                 dict(state.get("preview_faces") or {}).items() if s in SIDES},
               "reused_from": state.get("reused_from")}  # fmt: skip
        if out["iteration"] < 0 or out["batch"] < 1 or not 0 <= out["elapsed_s"] < 1e12:
            raise ValueError("iteration, batch or elapsed_s out of range")
        if not isinstance(out["reused_from"], str | None):
            raise ValueError("reused_from is not a name")
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        problem = f"no {exc}" if isinstance(exc, KeyError) else str(exc)
        raise CheckpointError(f"{folder.file(STATE)} is damaged ({problem}){folder.restore_hint()}") from None
    return out


def _end_pretraining(run: TrainingRun) -> None:
    """As the reference: the identity-carrying inters start again, and so does the count."""
    inters = ["inter"] if run.model.kind == "df" else ["inter_AB", "inter_B"]
    for name in inters:
        glorot_(getattr(run.model, name))
    run.opt = type(run.opt)(list(run.model.named_parameters()), lr=run.recipe.lr,
                            lr_dropout=run.recipe.lr_dropout, seed=run.seed)  # fmt: skip
    run.iteration, run.history = 0, LossHistory(2)
    run.drawn, run.last_batch = {s: 0 for s in SIDES}, None
    progress.say(f"pretraining ended: {', '.join(inters)} re-initialised, iteration reset to 0")


def _pick_preview_faces(run: TrainingRun) -> None:
    rows = max(1, min(4, run.batch, 800 // run.model.config["resolution"]))
    run.preview_idx = {}
    for s in SIDES:
        names = run.data[s].names
        index = {n: i for i, n in enumerate(names)}
        chosen = [index[n] for n in run.preview_faces.get(s, []) if n in index][:rows]
        if len(chosen) < min(rows, len(names)):
            perm = torch.randperm(len(names), generator=generator(run.seed, s, "preview")).tolist()
            chosen += [i for i in perm if i not in chosen][: rows - len(chosen)]
        run.preview_idx[s] = chosen
        run.preview_faces[s] = [names[i] for i in chosen]
