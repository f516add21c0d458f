"""How each model kind trains: the reference tool's settings, fixed (Quick96) or from options (SAEHD)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, replace

from facelab.faces.align import canonical_face_type
from facelab.train.augment import AugmentSpec


@dataclass(frozen=True)
class Recipe:
    model: str  # registry name (facelab.models)
    class_name: str  # folder suffix, as the reference names its models
    face_type: str
    batch: int
    lr: float
    lr_dropout: float  # probability of keeping a weight's update each step; 1.0 = off
    augment: AugmentSpec = field(default_factory=AugmentSpec)
    flip_src: bool = False
    flip_dst: bool = False
    repeat_unwarped_every: int = 0  # every n-th iteration re-trains the last batch without the warp
    optimizer: str = "rmsprop"  # or "adabelief"
    lr_cycle: int = 0  # iterations of the cosine learning-rate cycle (0 = constant)
    loss: str = "quick96"  # or "saehd"
    masked_training: bool = True
    eyes_mouth_prio: bool = False
    clipgrad: bool = False
    uniform_yaw: bool = False
    blur_out_mask: bool = False
    hsv_power: float = 0.0
    ct_mode: str = "none"
    gan_power: float = 0.0
    gan_patch_size: int = 0  # 0 = resolution / 8
    gan_dims: int = 16
    true_face_power: float = 0.0
    face_style_power: float = 0.0
    bg_style_power: float = 0.0
    pretrain: bool = False
    ema: float = 0.0  # decay of the weights' moving average (0 = none); train/ema.py
    detail_loss: float = 0.0  # weight of the image-gradient loss (losses.gradient_loss)
    lr_schedule: bool = False  # warm-up, then a decay over the budget's end (optim.schedule_factor)

    def to_json(self) -> dict:
        return asdict(self)

    def augment_for(self, side: str) -> AugmentSpec:
        return replace(self.augment, random_flip=self.flip_src if side == "src" else self.flip_dst)


RECIPES = {
    "quick96": Recipe(
        model="quick96",
        class_name="Quick96",
        face_type="full_face",
        batch=4,
        lr=2e-4,
        lr_dropout=0.3,
        augment=AugmentSpec(random_warp=True, scale=0.05),
        repeat_unwarped_every=3,
    ),
    "saehd": Recipe(
        model="saehd",
        class_name="SAEHD",
        face_type="full_face",
        batch=8,
        lr=5e-5,
        lr_dropout=1.0,
        augment=AugmentSpec(random_warp=True, scale=0.15),
        flip_dst=True,
        optimizer="adabelief",
        loss="saehd",
    ),
}


# AMP trains as SAEHD does, with its own loss (both DSSIM windows) and eyes/mouth always weighted.
RECIPES["amp"] = replace(RECIPES["saehd"], model="amp", class_name="AMP", face_type="whole_face", loss="amp",
                         eyes_mouth_prio=True)  # fmt: skip


# XSeg learns label masks (sigmoid cross-entropy) on both sides' labelled faces: RMSprop 1e-4 with
# learning-rate dropout, the reference's mild affine and flips, no warp (the mask must stay true to
# the image); batch_size is per side, so the default 2 makes the reference's 4 per iteration.
RECIPES["xseg"] = Recipe(model="xseg", class_name="XSeg", face_type="whole_face", batch=2, lr=1e-4,
                         lr_dropout=0.3, augment=AugmentSpec(random_warp=False, scale=0.05), flip_src=True,
                         flip_dst=True, loss="xseg")  # fmt: skip


def recipe(name: str) -> Recipe:
    try:
        return RECIPES[name.lower()]
    except KeyError:
        raise ValueError(f"unknown model {name!r}: use one of {', '.join(sorted(RECIPES))}") from None


def with_options(base: Recipe, options: dict) -> Recipe:
    """The recipe a model's options make (Quick96's are facelab's extras only)."""
    if not options:
        return base
    o = options
    if "ema" in o:  # facelab's own options (model_options.EXTRAS), for every kind but XSeg
        base = replace(base, ema=o["ema"], detail_loss=o["detail_loss"], lr_schedule=o["lr_schedule"])
    if base.model == "quick96":
        return base
    if base.loss == "xseg":
        return replace(base, face_type=canonical_face_type(o["face_type"]), batch=o["batch_size"],
                       lr=o["learning_rate"], lr_dropout=0.3 if o["lr_dropout"] else 1.0)  # fmt: skip
    r = replace(
        base,
        face_type=canonical_face_type(o["face_type"]),
        batch=o["batch_size"],
        augment=replace(base.augment, random_warp=o["random_warp"]),
        flip_src=o["random_src_flip"],
        flip_dst=o["random_dst_flip"],
        optimizer="adabelief" if o.get("adabelief", True) else "rmsprop",
        lr_dropout=0.3 if o["lr_dropout"] else 1.0,
        lr_cycle=500 if o["lr_dropout"] else 0,
        masked_training=o.get("masked_training", True),
        eyes_mouth_prio=o.get("eyes_mouth_prio", base.eyes_mouth_prio),
        clipgrad=o["clipgrad"],
        uniform_yaw=o["uniform_yaw"],
        blur_out_mask=o["blur_out_mask"],
        hsv_power=o.get("random_hsv_power", 0.0),
        ct_mode=o["ct_mode"],
        gan_power=o["gan_power"],
        gan_patch_size=o["gan_patch_size"],
        gan_dims=o["gan_dims"],
        true_face_power=o.get("true_face_power", 0.0),
        face_style_power=o.get("face_style_power", 0.0),
        bg_style_power=o.get("bg_style_power", 0.0),
        pretrain=o.get("pretrain", False),
    )
    if r.pretrain:  # the reference's pretraining: plain reconstruction of many faces
        r = replace(r, augment=replace(r.augment, random_warp=False), flip_src=True, flip_dst=True,
                    gan_power=0.0, lr_dropout=1.0, lr_cycle=0, hsv_power=0.0, face_style_power=0.0,
                    bg_style_power=0.0, true_face_power=0.0, uniform_yaw=True)  # fmt: skip
    return r
