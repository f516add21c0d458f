"""DeepFaceLab model folders: find the models in one, import a model into a facelab model folder,
and export a facelab model back (`facelab import-dfl`, `facelab export-dfl`).

A DeepFaceLab model is a set of files `<name>_<Class>_<part>` in its `model/` folder:
`data.dat` (iteration, options, loss history), one `.npy` per network part (despite the name, a
pickled dict `{variable name: array}`), `src_dst_opt.npy` (the optimiser) and, when trained with
them, `GAN.npy` / `GAN_opt.npy` and `code_discriminator.npy` / `D_code_opt.npy`. Nothing is
written until every tensor has been read and checked, so a bad file leaves nothing behind.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

from facelab.dfl import names, pickles
from facelab.errors import FacelabError
from facelab.fsutil import write_bytes_atomic
from facelab.models import discriminators
from facelab.models.amp import FROZEN_PREFIXES
from facelab.models.discriminators import CODE, GAN
from facelab.models.folder import SUMMARY, ModelFolder, architecture, build_network
from facelab.models.registry import create_model
from facelab.models.registry import model_options as arch_defaults
from facelab.train import catalog, model_options
from facelab.train.history import LossHistory
from facelab.train.recipes import recipe, with_options
from facelab.train.setup import new_config, new_state

CLASSES = {"Quick96": "quick96", "SAEHD": "saehd", "AMP": "amp", "XSeg": "xseg"}
CLASS_OF = {v: k for k, v in CLASSES.items() if v != "xseg"}  # what export-dfl writes
DATA, OPTIMIZER = "data.dat", "src_dst_opt.npy"  # and SUMMARY, spelt as ours
# discriminator prefix -> (weights file, optimiser file, the network's name inside the optimiser
# file for SAEHD and for AMP)
AUX_FILES = {GAN: ("GAN.npy", "GAN_opt.npy", {"saehd": "D_src", "amp": "GAN"}),
             CODE: ("code_discriminator.npy", "D_code_opt.npy", {"saehd": "dis"})}  # fmt: skip
# DeepFaceLab options facelab has no use for, and why (shown in the import's summary).
NOT_OURS = {"models_opt_on_gpu": "facelab keeps weights and optimiser on the training device"}


class DflError(FacelabError):
    pass


@dataclass(frozen=True)
class DflModel:
    folder: Path
    name: str
    class_name: str

    @property
    def prefix(self) -> str:
        return "XSeg_" if self.class_name == "XSeg" else f"{self.name}_{self.class_name}_"

    def file(self, part: str) -> Path:
        return self.folder / f"{self.prefix}{part}"

    def __str__(self) -> str:
        return f"{self.name} ({self.class_name})"


def find(path: Path) -> list[DflModel]:
    """The DeepFaceLab models in a folder, or the one a file of the folder belongs to."""
    path = Path(path)
    if not path.exists():
        raise DflError(f"{path} does not exist: give DeepFaceLab's model folder or one of its files")
    folder = path if path.is_dir() else path.parent
    found = []
    for f in sorted(folder.glob(f"*_{DATA}")):
        stem = f.name[: -len(DATA) - 1]
        if stem == "XSeg":
            found.append(DflModel(folder, "XSeg", "XSeg"))
        elif "_" in stem:
            name, _, class_name = stem.rpartition("_")
            found.append(DflModel(folder, name, class_name))
    if path.is_file():
        found = [m for m in found if path.name.startswith(m.prefix)]
    return found


def choose(path: Path, model_name: str | None) -> DflModel:
    models = find(path)
    if model_name:
        models = [m for m in models if model_name in (m.name, f"{m.name}_{m.class_name}")]
    if not models:
        what = f"no model {model_name!r}" if model_name else "no DeepFaceLab model"
        raise DflError(f"{path}: {what} (no <name>_<Class>_{DATA}): give DeepFaceLab's model folder "
                       "or one model's files")  # fmt: skip
    if len(models) > 1:
        listed = ", ".join(str(m) for m in models)
        raise DflError(f"{path} holds several models ({listed}): pick one with --model-name NAME")
    model = models[0]
    if model.class_name not in CLASSES:
        known = ", ".join(CLASSES)
        raise DflError(f"{model.file(DATA)}: unknown model class {model.class_name!r} "
                       f"(facelab imports {known})")  # fmt: skip
    return model


def _load(path: Path):
    try:
        return pickles.load(path)
    except pickles.PickleError as exc:
        raise DflError(str(exc)) from None


# ------------------------------------------------------------------------------------ options


def _dfl_value(name: str, value):
    """A DFL option value as our spec reads it (DFL's lr_dropout is 'n', 'y' or 'cpu')."""
    if name == "lr_dropout" and isinstance(value, str):
        return value.lower() != "n"
    return value.item() if isinstance(value, np.generic) else value


def _plain(value) -> bool:
    """A value config.json can keep as it is: a short string, a finite number, a bool or None."""
    if isinstance(value, float):
        return math.isfinite(value)
    return value is None or isinstance(value, bool | int) or (isinstance(value, str) and len(value) <= 256)


def map_options(kind: str, dfl: dict, source: Path) -> tuple[dict, dict, list[str]]:
    """(architecture, our model options, notes on what was not imported) from DFL's options."""
    specs = model_options.specs(kind)
    notes = []
    options = {}
    for key, value in dfl.items():
        if key not in specs:
            why = NOT_OURS.get(key, "facelab has no such option")
            notes.append(f"{key}={_dfl_value(key, value)!r} ({why})")
    for name, spec in specs.items():
        if name not in dfl:
            options[name] = spec.default
            continue
        try:
            options[name] = spec.parse(_dfl_value(name, dfl[name]))
        except ValueError as exc:
            if not spec.changeable:  # the tensors depend on it
                raise DflError(f"{source}: option {exc}: facelab cannot build this model") from None
            options[name] = spec.default
            notes.append(f"{name}={dfl[name]!r} ({exc}; {spec.default!r} used)")
    if kind == "saehd" and str(dfl.get("lr_dropout", "n")).lower() == "cpu":
        notes.append("lr_dropout='cpu' (imported as y: facelab draws the dropout on the training device)")
    arch = {k: options.get(k, v) for k, v in arch_defaults(kind).items()}  # Quick96's are fixed
    return arch, options, notes


def dfl_options(kind: str, options: dict, kept: dict) -> dict:
    """Our options in DFL's spelling, with the DFL-only options an import kept (`kept`)."""
    out = dict(kept)
    if kind != "quick96":  # DFL's Quick96 has no options
        for name, value in options.items():
            out[name] = ("y" if value else "n") if name == "lr_dropout" else value
    return out


# ------------------------------------------------------------------------------------ tensors


@dataclass
class Tensors:
    """What an import read: our weights and optimiser state, and notes for the summary."""

    weights: dict[str, torch.Tensor] = field(default_factory=dict)
    optimizer: dict[str, torch.Tensor] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _assign(target: dict[str, torch.Tensor], ours: str, src: Path, dfl_key: str, array, expected) -> None:
    if not isinstance(array, np.ndarray) or array.dtype.kind not in "fiub":
        raise DflError(f"{src}: {dfl_key} is not an array of numbers: the file is damaged")
    a = array
    t = names.from_dfl(torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)))
    if tuple(t.shape) != tuple(expected.shape):
        dfl_shape = tuple(names.to_dfl(torch.empty(expected.shape)).shape)
        raise DflError(f"{src}: {dfl_key} has shape {a.shape}, but the options in the model's {DATA} need "
                       f"{dfl_shape}: the files do not belong together")  # fmt: skip
    target[ours] = t.contiguous()


def _read_network(model: DflModel, net: nn.Module, mapping: dict[str, tuple[str, str]]) -> dict:
    """Every tensor of `net` from its DFL part files; a missing or extra tensor is an error."""
    shapes = net.state_dict()
    by_part: dict[str, dict[str, str]] = {}
    for ours, (part, key) in mapping.items():
        by_part.setdefault(part, {})[key] = ours
    out: dict[str, torch.Tensor] = {}
    for part, wanted in by_part.items():
        path = model.file(f"{part}.npy")
        if not path.exists():
            raise DflError(f"{path} is missing: the model is incomplete")
        arrays = _load(path)
        if not isinstance(arrays, dict):
            raise DflError(f"{path} is not a DeepFaceLab weights file (a dict of arrays)")
        extra = sorted(map(str, set(arrays) - set(wanted)))  # (a damaged file's keys may not be names)
        if extra:
            raise DflError(f"{path}: unexpected tensor {extra[0]} ({len(extra)} in all): the options in "
                           f"the model's {DATA} describe another network")  # fmt: skip
        for key, ours in wanted.items():
            if key not in arrays:
                raise DflError(f"{path}: tensor {key} is missing")
            _assign(out, ours, path, key, arrays[key], shapes[ours])
        del arrays
    return out


def _opt_key(slot: str, owner: str, dfl_key: str) -> str:
    """DFL's optimiser variable: `ms_encoder/down1/conv1/weight_0:0` for `down1/conv1/weight:0`."""
    return f"{slot}_{owner}/{dfl_key.replace(':', '_')}:0"


def _slots(adabelief: bool) -> dict[str, str]:
    """Our optimiser state name -> DFL's slot prefix."""
    return {"m": "ms", "acc": "vs"} if adabelief else {"acc": "acc"}


def _read_optimizer(path: Path, params: dict[str, tuple[str, str]], shapes: dict[str, torch.Tensor],
                    adabelief: bool, what: str, notes: list[str]) -> dict[str, torch.Tensor]:  # fmt: skip
    """Our optimiser state for `params` ({our name: (owner, DFL name)}), or {} (fresh) with a note."""
    if not path.exists():
        notes.append(f"{what}: no {path.name}, the optimiser starts fresh")
        return {}
    arrays = _load(path)
    if not isinstance(arrays, dict):
        raise DflError(f"{path} is not a DeepFaceLab optimiser file (a dict of arrays)")
    slots = _slots(adabelief)
    if not any(_opt_key(s, *params[n]) in arrays for s in slots.values() for n in params):
        kind = "AdaBelief" if adabelief else "RMSprop"
        notes.append(f"{what}: {path.name} is not {kind} state, the optimiser starts fresh")
        return {}
    out, absent = {}, 0
    for ours, (owner, key) in params.items():
        for slot, dfl_slot in slots.items():
            name = _opt_key(dfl_slot, owner, key)
            if name in arrays:
                _assign(out, f"{slot}/{ours}", path, name, arrays[name], shapes[ours])
            else:
                out[f"{slot}/{ours}"] = torch.zeros_like(shapes[ours])
                absent += 1
    if absent:
        notes.append(f"{what}: {absent} optimiser tensors absent in {path.name} (weights DFL did not "
                     "train) start at zero")  # fmt: skip
    return out


def _trained(net: nn.Module) -> list[str]:
    return [n for n, _ in net.named_parameters() if not n.startswith(FROZEN_PREFIXES)]


def _discriminators(model: DflModel, net: nn.Module, kind: str, options: dict, got: Tensors) -> None:
    """GAN and code-discriminator weights and optimiser state, where DFL wrote them."""
    for prefix, d in discriminators.for_options(net, options).items():
        weights_file, opt_file, owners = AUX_FILES[prefix]
        path = model.file(weights_file)
        what = "GAN" if prefix == GAN else "true face"
        if not path.exists():
            got.notes.append(f"{what}: no {path.name}, the discriminator starts fresh")
            continue
        mapping = names.discriminator_names(d)
        arrays = _load(path)
        if not isinstance(arrays, dict) or set(arrays) != set(mapping.values()):
            got.notes.append(f"{what}: {path.name} does not match the options, it starts fresh")
            continue
        shapes = d.state_dict()
        try:
            part = {}
            for ours, key in mapping.items():
                _assign(part, ours, path, key, arrays[key], shapes[ours])
        except DflError as exc:
            got.notes.append(f"{what}: {exc}; the discriminator starts fresh")
            continue
        got.weights |= {prefix + k: v for k, v in part.items()}
        params = {n: (owners.get(kind, ""), mapping[n]) for n in _trained(d)}
        opt = _read_optimizer(model.file(opt_file), params, shapes, options.get("adabelief", True), what,
                              got.notes)  # fmt: skip
        got.optimizer |= {prefix + k: v for k, v in opt.items()}


def read_model(model: DflModel, kind: str, arch: dict, options: dict) -> tuple[nn.Module, Tensors]:
    try:
        with torch.device("meta"):  # names and shapes: every tensor comes from the files
            net = create_model(kind, **arch)
    except ValueError as exc:
        raise DflError(f"{model.file(DATA)}: {exc}") from None
    mapping = names.parts(net)
    got = Tensors(weights=_read_network(model, net, mapping))
    adabelief = options.get("adabelief", True) if kind != "quick96" else False
    params = {n: mapping[n] for n in _trained(net)}
    got.optimizer = _read_optimizer(model.file(OPTIMIZER), params, net.state_dict(), adabelief, "model",
                                    got.notes)  # fmt: skip
    _discriminators(model, net, kind, options, got)
    return net, got


def history_from(losses) -> LossHistory:
    """Our loss history from DFL's list of per-iteration losses ([src, dst]; XSeg: [loss])."""
    rows = [r if isinstance(r, list | tuple) else [r] for r in (losses if isinstance(losses, list) else [])]
    history = LossHistory(len(rows[0]) if rows else 2)
    for i, row in enumerate(rows, 1):
        try:
            values = [float(v) for v in row]
        except (TypeError, ValueError, OverflowError):
            continue  # a damaged entry: the graph leaves it out
        if len(values) == len(history.pending) and all(math.isfinite(v) for v in values):
            history.add(i, values)
    return history


def _read_xseg(model: DflModel) -> tuple[nn.Module, Tensors]:
    """DFL's XSeg: `XSeg_<resolution>.npy` (its resolution in the name) and its RMSprop state
    `XSeg_<resolution>_opt.npy`."""
    found = sorted(p for p in model.folder.glob("XSeg_*.npy") if not p.stem.endswith("_opt"))
    if not found or not found[0].stem.split("_")[1].isdigit():
        raise DflError(f"{model.folder}: no XSeg_<resolution>.npy beside {model.file(DATA).name}")
    resolution = int(found[0].stem.split("_")[1])
    try:
        with torch.device("meta"):
            net = create_model("xseg", resolution=resolution)
    except ValueError as exc:
        raise DflError(f"{found[0]}: {exc}") from None
    mapping = names.parts(net)
    got = Tensors(weights=_read_network(model, net, mapping))
    params = {n: ("XSeg", mapping[n][1]) for n in _trained(net)}
    got.optimizer = _read_optimizer(model.file(f"{resolution}_opt.npy"), params, net.state_dict(), False,
                                    "model", got.notes)  # fmt: skip
    return net, got


def history_to(history: dict, iteration: int) -> list[list[float]]:
    """DFL's per-iteration list from our bucketed history (each bucket's mean repeated over it)."""
    points = LossHistory.from_json(history).points()
    out = []
    for i, point in enumerate(points):
        end = points[i + 1][0] if i + 1 < len(points) else iteration + 1
        out += [list(point[1:])] * max(1, int(end - point[0]))
    return out


# ------------------------------------------------------------------------------------ import


@dataclass
class Imported:
    folder: ModelFolder
    dfl: DflModel
    iteration: int
    notes: list[str]
    trashed: Path | None


def import_model(path: Path, model_root: Path, name: str | None = None, model_name: str | None = None,
                 overwrite: bool = False) -> Imported:  # fmt: skip
    model = choose(path, model_name)
    kind = CLASSES[model.class_name]
    name = catalog.check_name(name or ("xseg" if kind == "xseg" else model.name))
    target = ModelFolder.of(model_root, name, model.class_name)
    # A folder with nothing saved in it is what a killed import (or first save) left: no model yet.
    if target.exists() and not overwrite:
        raise DflError(f"{target} already exists: add --overwrite (the old one goes to the trash) "
                       "or choose another --name")  # fmt: skip
    data_path = model.file(DATA)
    data = _load(data_path)
    if not isinstance(data, dict) or not isinstance(data.get("options"), dict):
        raise DflError(f"{data_path} is not a DeepFaceLab model's data file (no options)")
    iteration = data.get("iter", 0) or 0
    if not isinstance(iteration, int | np.integer) or isinstance(iteration, bool) or iteration < 0:
        raise DflError(f"{data_path}: its iteration count is {str(iteration)[:40]!r}: the file is damaged")
    iteration = int(iteration)
    history = history_from(data.get("loss_history"))
    arch, options, notes = map_options(kind, data["options"], data_path)
    if kind == "xseg":
        net, got = _read_xseg(model)
        options["resolution"] = net.resolution
    else:
        net, got = read_model(model, kind, arch, options)
    rec = with_options(recipe(kind), options)
    config, batch = new_config(rec, net.config, options if model_options.specs(kind) else {}), rec.batch
    config["imported"] = {
        "from": "DeepFaceLab",
        "class": model.class_name,
        "source": str(model.folder.resolve()),
        "name": model.name,
        "iteration": iteration,
        "not_imported": notes + got.notes,
        "dfl_options": {k: v for k, v in ((k, _dfl_value(k, v)) for k, v in data["options"].items())
                        if isinstance(k, str) and k not in config["options"] and _plain(v)},
    }  # fmt: skip
    trashed = catalog.trash(target) if target.exists() else None
    with target.lock():
        target.save(config, got.weights, got.optimizer, new_state(batch, iteration, history),
                    summary_text(config, net))  # fmt: skip
    return Imported(target, model, iteration, notes + got.notes, trashed)


def summary_text(config: dict, net: nn.Module) -> str:
    imported = config["imported"]
    arch = ", ".join(f"{k}={v}" for k, v in net.config.items() if k != "name")
    params = sum(p.numel() for p in net.parameters())
    lines = [f"{config['class']} model imported from DeepFaceLab {imported['class']} '{imported['name']}'",
             f"iteration:      {imported['iteration']}",
             f"architecture:   {arch}",
             f"parameters:     {params / 1e6:.1f} M",
             f"face type:      {config['face_type']}",
             f"options:        {', '.join(f'{k}={v}' for k, v in config['options'].items()) or 'fixed'}",
             f"source:         {imported['source']}"]  # fmt: skip
    not_imported = imported["not_imported"] or ["nothing"]
    lines += [f"{'not imported:' if i == 0 else '':<16}{note}" for i, note in enumerate(not_imported)]
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------------------------ export


def export_model(folder: ModelFolder, out_dir: Path, overwrite: bool = False) -> list[Path]:
    """Write a facelab model in DeepFaceLab's files into `out_dir`; returns the files written.
    Each file is built and written on its own (atomically), so memory holds one file at a time."""
    ckpt = folder.load()
    kind, _ = architecture(ckpt.config)
    if kind not in CLASS_OF:
        raise DflError(f"{folder}: export-dfl writes Quick96, SAEHD and AMP models, not {kind}")
    with torch.device("meta"):  # names and shapes only: the weights come from the checkpoint
        net = build_network(ckpt.config)
        aux = discriminators.for_options(net, ckpt.config.get("options", {}))
    missing = sorted(set(net.state_dict()) - set(ckpt.weights))
    if missing:
        raise DflError(f"{folder}: the weights lack {missing[0]} ({len(missing)} in all): it is damaged")
    dfl = DflModel(Path(out_dir), folder.name, CLASS_OF[kind])
    adabelief = ckpt.config.get("training", {}).get("optimizer") == "adabelief"
    iteration = int(ckpt.state.get("iteration", 0))
    mapping = names.parts(net)
    files: dict[str, Callable[[], dict]] = {}
    for part in dict.fromkeys(p for p, _ in mapping.values()):
        files[f"{part}.npy"] = partial(_part_arrays, ckpt.weights, mapping, part)
    params = {n: mapping[n] for n in _trained(net)}
    if _has_state(ckpt.optimizer, params, adabelief):
        files[OPTIMIZER] = partial(_optimizer_arrays, ckpt.optimizer, params, adabelief, iteration)
    for prefix, d in aux.items():
        weights = {k[len(prefix) :]: v for k, v in ckpt.weights.items() if k.startswith(prefix)}
        if set(weights) != set(d.state_dict()):
            continue  # never trained (or changed since): DFL starts it fresh too
        weights_file, opt_file, owners = AUX_FILES[prefix]
        dnames = names.discriminator_names(d)
        files[weights_file] = partial(_renamed_arrays, weights, dnames)
        state = {k[len(prefix) :]: v for k, v in ckpt.optimizer.items() if k.startswith(prefix)}
        dparams = {n: (owners.get(kind, ""), dnames[n]) for n in _trained(d)}
        if _has_state(state, dparams, adabelief):
            files[opt_file] = partial(_optimizer_arrays, state, dparams, adabelief, iteration)
    kept = ckpt.config.get("imported", {}).get("dfl_options", {})
    data = {"iter": iteration, "options": dfl_options(kind, ckpt.config.get("options", {}), kept),
            "loss_history": history_to(ckpt.state["history"], iteration)}  # fmt: skip
    files[DATA] = lambda: data
    targets = [dfl.file(part) for part in [*files, SUMMARY]]
    existing = [p for p in targets if p.exists()]
    if existing and not overwrite:
        raise DflError(f"{existing[0]} already exists: add --overwrite or choose another --out")
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    for part, build in files.items():
        pickles.dump(dfl.file(part), build())
    summary = folder.file(SUMMARY)
    write_bytes_atomic(dfl.file(SUMMARY), summary.read_bytes() if summary.exists() else b"")
    return targets


def _dfl_array(t: torch.Tensor) -> np.ndarray:
    """In DFL's layout and C order. A permuted conv kernel is neither C- nor F-contiguous, so the
    pickler already copies it out in C order: copying it here first would only double the work."""
    a = names.to_dfl(t).numpy()
    return a if a.ndim == 4 else np.ascontiguousarray(a)


def _part_arrays(weights: dict[str, torch.Tensor], mapping: dict[str, tuple[str, str]], part: str) -> dict:
    return {key: _dfl_array(weights[ours]) for ours, (p, key) in mapping.items() if p == part}


def _renamed_arrays(weights: dict[str, torch.Tensor], dfl_names: dict[str, str]) -> dict:
    return {dfl_names[k]: _dfl_array(v) for k, v in weights.items()}


def _has_state(state: dict[str, torch.Tensor], params: dict, adabelief: bool) -> bool:
    return bool(params) and all(f"{slot}/{n}" in state for slot in _slots(adabelief) for n in params)


def _optimizer_arrays(state: dict[str, torch.Tensor], params: dict[str, tuple[str, str]], adabelief: bool,
                      iteration: int) -> dict:  # fmt: skip
    out = {"iters:0": np.int64(iteration)}
    for ours, (owner, key) in params.items():
        for slot, dfl_slot in _slots(adabelief).items():
            out[_opt_key(dfl_slot, owner, key)] = _dfl_array(state[f"{slot}/{ours}"])
    return out


def is_imported(config: dict) -> bool:
    return isinstance(config.get("imported"), dict)
