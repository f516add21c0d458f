"""Model options: one typed spec per option, for prompts, `--opt key=value`, config files and the UI.

A new model takes its options from (lowest first) the specs' defaults, the values last used for a
new model of that kind (`model/<Class>_default_options.json`), a `--config` file, and `--opt`
flags; on a terminal every option not given is asked. A resumed model keeps its saved options;
`--override` (or Enter within 2 seconds on a terminal) lets the changeable ones change, and a
change to a fixed one is refused with the list of fixed options.
"""

from __future__ import annotations

import select
import sys
from dataclasses import replace
from pathlib import Path

from facelab import prompts
from facelab.errors import UsageError
from facelab.fsutil import parse_json, write_json_atomic
from facelab.models import options as arch
from facelab.models.archi import parse_archi
from facelab.models.folder import BACKUPS
from facelab.options import Option
from facelab.train.color import CT_MODES

# facelab's own training options, beside the reference tool's (issue 19 measured them: see the README's
# "Sharper, steadier swaps"). They change how the network learns, not its architecture.
EXTRAS = [
    Option("ema", float, 0.0, "keep an exponential moving average of the weights with this decay per "
           "iteration (e.g. 0.999) and use it for the preview, merge and export (0 = off)",
           range=(0.0, 0.9999)),
    Option("detail_loss", float, 0.0, "weight of an edge (image-gradient) loss beside DSSIM+MSE, for finer "
           "detail (0 = off; 1 = about a tenth of the DSSIM term)", range=(0.0, 10.0)),
    Option("lr_schedule", bool, False, "warm the learning rate up over the first 100 iterations and let it "
           "fall (cosine, to a tenth) over the last 40 % of the iteration or time budget"),
]  # fmt: skip

SAEHD = [
    arch.RESOLUTION,
    Option("face_type", str, "f", "how much of the head: half, mid-full, full, whole, head",
           choices=("h", "mf", "f", "wf", "head"), changeable=False),
    arch.ARCHI, arch.AE_DIMS, arch.E_DIMS, arch.D_DIMS, arch.D_MASK_DIMS,
    Option("batch_size", int, 8, "faces per side per iteration", range=(1, 256)),
    Option("target_iter", int, 0, "stop at this iteration (0 = train until stopped)", range=(0, 10**9)),
    Option("autobackup_hour", float, 0.0, f"back up into {BACKUPS}/01..24 every N hours (0 = only on b)",
           range=(0.0, 24.0), flags=("--backup-every",)),
    Option("write_preview_history", bool, False, "keep a preview image every 10 iterations in history/",
           flags=("--preview-history",), switch=True),
    Option("random_src_flip", bool, False, "mirror src faces at random (more angles, less likeness)"),
    Option("random_dst_flip", bool, True, "mirror dst faces at random"),
    Option("masked_training", bool, True, "learn only the face inside the mask"),
    Option("eyes_mouth_prio", bool, False, "weight eyes and mouth 30x in the loss (sharper eyes, teeth)"),
    Option("adabelief", bool, True, "AdaBelief optimiser (else RMSprop)"),
    Option("lr_dropout", bool, False, "learning-rate dropout + 500-iteration cosine lr cycle (for the end)"),
    Option("random_warp", bool, True, "warp the inputs (turn off near the end for detail)"),
    Option("clipgrad", bool, False, "clip the gradient norm at 1 (against collapse)"),
    Option("uniform_yaw", bool, False, "draw faces evenly over head turn (helps side faces)"),
    Option("blur_out_mask", bool, False, "blur the target outside the face mask (needs good masks)"),
    Option("random_hsv_power", float, 0.0, "random hue/saturation/value shifts of src", range=(0.0, 0.3)),
    Option("ct_mode", str, "none", "colour-transfer src faces toward dst faces", choices=CT_MODES),
    Option("gan_power", float, 0.0, "GAN weight: sharper detail once the model is trained", range=(0.0, 5.0)),
    Option("gan_patch_size", int, 0, "GAN patch in pixels (0 = resolution/8)", range=(0, 640)),
    Option("gan_dims", int, 16, "GAN discriminator width", range=(4, 512)),
    Option("true_face_power", float, 0.0, "make the swap look more like src (DF only)", range=(0.0, 1.0)),
    Option("face_style_power", float, 0.0, "pull the swapped face's colours toward dst", range=(0.0, 100.0)),
    Option("bg_style_power", float, 0.0, "pull the area around the swap toward dst", range=(0.0, 100.0)),
    Option("pretrain", bool, False, "train on --pretrain-faces (both sides); off again restarts at 0"),
    *EXTRAS,
]  # fmt: skip


SHARED = {o.name: o for o in SAEHD}
AMP = [
    arch.AMP_RESOLUTION,
    Option("face_type", str, "wf", "how much of the head: full, whole, head", choices=("f", "wf", "head"),
           changeable=False),
    SHARED["ae_dims"],
    arch.INTER_DIMS,
    SHARED["e_dims"], SHARED["d_dims"], SHARED["d_mask_dims"],
    arch.MORPH_FACTOR,
] + [SHARED[n] for n in ("batch_size", "target_iter", "autobackup_hour", "write_preview_history",
                          "random_src_flip", "random_dst_flip", "uniform_yaw", "blur_out_mask", "lr_dropout",
                          "random_warp", "gan_power", "gan_patch_size", "gan_dims", "ct_mode",
                          "clipgrad")] + EXTRAS  # fmt: skip

XSEG = [
    arch.XSEG[0],
    Option("face_type", str, "wf", "how much of the head the masks cover: half, mid-full, full, whole, head",
           choices=("h", "mf", "f", "wf", "head"), changeable=False),
    Option("batch_size", int, 2, "labelled faces per side per iteration", range=(1, 256)),
    Option("learning_rate", float, 1e-4, "RMSprop learning rate (the reference's 1e-4; measured: a new "
           "model learns several times faster at 1e-3 without lr_dropout)", range=(1e-6, 1e-2)),
    Option("lr_dropout", bool, True, "keep each weight's update with probability 0.3 (the reference's)"),
] + [SHARED[n] for n in ("target_iter", "autobackup_hour", "write_preview_history")]  # fmt: skip

# Quick96 keeps the reference's fixed recipe and asks nothing; facelab's extras can be set with --opt.
QUICK96 = [replace(o, prompt=False) for o in EXTRAS]
OPTIONS: dict[str, list[Option]] = {"quick96": QUICK96, "saehd": SAEHD, "amp": AMP, "xseg": XSEG}


def specs(model: str) -> dict[str, Option]:
    return {o.name: o for o in OPTIONS[model]}


def parse_pairs(model: str, pairs: list[str]) -> dict:
    """`key=value` flags checked against the model's specs."""
    known = specs(model)
    out = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep:
            raise UsageError(f"--opt {pair!r}: use key=value, e.g. --opt batch_size=8")
        if key not in known:
            names = ", ".join(known) if known else "none"
            if not any(o.prompt for o in known.values()):  # Quick96: the reference's recipe, plus the extras
                names += "; the rest of its settings are fixed (use --batch)"
            raise UsageError(f"--opt {key}: {model} has no option {key!r} (its options: {names})")
        try:
            out[key] = known[key].parse(value.strip())
        except ValueError as exc:
            raise UsageError(f"--opt {key}: {exc}") from None
    return out


def check_arch(model: str, options: dict) -> None:
    """Combination checks a single spec cannot make (resolution vs -d, true face on LIAE)."""
    if model == "saehd":
        if options["true_face_power"] and parse_archi(options["archi"])[0] != "df":
            raise UsageError("true_face_power works with df architectures only: set it to 0 for liae")
        step = 32 if "d" in parse_archi(options["archi"])[1] else 16
        if options["resolution"] % step:
            raise UsageError(
                f"resolution {options['resolution']} must be a multiple of {step} "
                f"for archi {options['archi']}"
            )


def _ask(opt: Option, default):
    shown = ("y" if default else "n") if opt.type is bool else default
    value = prompts.ask(opt.name, shown, opt.parse, opt.allowed(), opt.help)
    return opt.parse(value) if isinstance(value, str) and opt.type is not str else value


def defaults_file(model_root: Path, class_name: str) -> Path:
    return Path(model_root) / f"{class_name}_default_options.json"


def for_new_model(model: str, class_name: str, model_root: Path, given: dict) -> dict:
    known = specs(model)
    saved = {}
    path = defaults_file(model_root, class_name)
    if path.exists():
        try:
            saved = {k: known[k].parse(v) for k, v in parse_json(path.read_text()).items() if k in known}
        except (ValueError, OSError):
            saved = {}  # a damaged defaults file only loses the convenience
    options = {}
    for name, opt in known.items():
        default = saved.get(name, opt.default)
        if name in given:
            options[name] = given[name]
        else:  # an option not asked takes its own default, not the one last used
            options[name] = _ask(opt, default) if opt.prompt else opt.default
    check_arch(model, options)
    if known:
        Path(model_root).mkdir(parents=True, exist_ok=True)
        write_json_atomic(path, options)
    return options


def override_window(seconds: float = 2.0) -> bool:
    """On a terminal: True if Enter is pressed within `seconds`."""
    if not prompts.interactive():
        return False
    print(f"Press Enter within {seconds:g} seconds to override the model's settings.", flush=True)
    ready, _, _ = select.select([sys.stdin], [], [], seconds)
    if ready:
        sys.stdin.readline()
    return bool(ready)


def saved_options(model: str, saved: dict) -> dict:
    """A model's saved options, checked, with the defaults of options added since it was saved."""
    known = specs(model)
    options = {k: known[k].parse(v) for k, v in saved.items() if k in known}
    return {name: options.get(name, opt.default) for name, opt in known.items()}


def refuse_fixed(model: str, current: dict, given: dict) -> None:
    """UsageError naming the options in `given` that would change a fixed option of `current`."""
    known = specs(model)
    fixed = [k for k, v in given.items() if not known[k].changeable and v != current[k]]
    if fixed:
        names = ", ".join(o.name for o in known.values() if not o.changeable)
        raise UsageError(
            f"{', '.join(fixed)} cannot change after the model is created (fixed: {names}); "
            "train a new model to change them"
        )


def for_resumed_model(model: str, saved: dict, given: dict, override: bool) -> dict:
    known = specs(model)
    options = saved_options(model, saved)
    refuse_fixed(model, options, given)
    options |= given
    if any(o.prompt for o in known.values()) and (override or override_window()):
        for name, opt in known.items():
            if opt.changeable and opt.prompt and name not in given:
                options[name] = _ask(opt, options[name])
    check_arch(model, options)
    return options
