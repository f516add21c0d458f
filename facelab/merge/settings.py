"""Merge settings: one typed spec per setting (flags, config file, session file and ranges)."""

from __future__ import annotations

from facelab.color import MODES as COLOR_MODES
from facelab.options import Option

MAX_STEADY = 10  # the most frames either side --stabilise may average the face's placement over
MODES = ("original", "overlay", "hist-match", "seamless", "seamless-hist-match", "raw-rgb", "raw-predict")
# blend.face_mask builds each from named parts; the xseg ones need an XSeg model (--xseg-model).
MASK_MODES = (
    "full", "dst", "learned-prd", "learned-dst", "learned-prd*learned-dst", "learned-prd+learned-dst",
    "xseg-prd", "xseg-dst", "xseg-prd*xseg-dst", "learned-prd*learned-dst*xseg-prd*xseg-dst",
)  # fmt: skip

OPTIONS = [
    Option("mode", str, "overlay", "how the face goes into the frame", choices=MODES),
    Option("mask_mode", str, "learned-prd*learned-dst", "which mask blends the face", choices=MASK_MODES),
    Option("erode", int, 0, "shrink (+) or grow (-) the mask, pixels at 4x model size", range=(-400, 400)),
    Option("blur", int, 48, "soften the mask edge, pixels at 4x model size", range=(0, 400)),
    Option("feather", str, "centred", "where the softened edge fades: centred on the mask's edge, as "
           "DeepFaceLab does, or inward, inside it (the frame outside the mask stays untouched, but the "
           "face shows less of the src: measured, it costs identity)", choices=("centred", "inward")),
    Option("color_transfer", str, "rct", "recolour the face toward the frame", choices=COLOR_MODES),
    Option("masked_hist_match", bool, True, "hist-match modes: match inside the mask only"),
    Option("hist_match_threshold", int, 238, "hist-match: lower values darken highlights", range=(0, 255)),
    Option("stabilise", int, 3, "steady the face's placement: average it over this many frames either "
           "side while the face holds nearly still (0 = off)", range=(0, MAX_STEADY)),
    Option("temporal", int, 0, "blend each face's prediction with the previous frame's, moved onto this "
           "frame's face, at up to this percent: calmer detail; less where the dst face changed between the "
           "two frames, so talking and turning stay sharp (0 = off)", range=(0, 90)),
    Option("face_scale", int, 0, "make the pasted face larger (+) or smaller (-), percent", range=(-50, 50)),
    Option("sharpen_mode", str, "none", "filter for --sharpen-amount", choices=("none", "box", "gaussian")),
    Option("sharpen_amount", int, 0, "sharpen (+) or blur (-) the face", range=(-100, 100)),
    Option("restore_detail", int, 100, "sharpen a face softer than the dst's: percent of the sharpness "
           "gap to close, never adding more contrast than the dst has (0 = off)", range=(0, 100)),
    Option("motion_blur", int, 0, "blur the face along its motion between frames", range=(0, 100)),
    Option("denoise", int, 0, "denoise the face (to match a clean video)", range=(0, 500)),
    Option("bicubic_degrade", int, 0, "down- and up-scale the face (to match a soft video)", range=(0, 100)),
    Option("color_degrade", int, 0, "fewer face colours (to match a compressed video)", range=(0, 100)),
    Option("morph", float, 1.0, "AMP models: share of the src identity (0 = dst, 1 = src)", range=(0.0, 1.0)),
]
BY_NAME = {o.name: o for o in OPTIONS}


def validate(settings: dict, strict: bool = False) -> dict:
    """Defaults filled in, every value checked; ValueError names the setting and its range.
    `strict`: the values come from JSON and must have their JSON type already (see Option.from_json)."""
    out = {o.name: o.default for o in OPTIONS}
    for key, value in settings.items():
        if key not in BY_NAME:
            raise ValueError(f"unknown merge setting {key!r}")
        out[key] = BY_NAME[key].from_json(value) if strict else BY_NAME[key].parse(value)
    return out
