"""How each model kind trains: the reference tool's fixed settings per model class."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

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
    repeat_unwarped_every: int = 0  # every n-th iteration re-trains the last batch without the warp

    def to_json(self) -> dict:
        return asdict(self)


RECIPES = {
    "quick96": Recipe(
        model="quick96",
        class_name="Quick96",
        face_type="full_face",
        batch=4,
        lr=2e-4,
        lr_dropout=0.3,
        augment=AugmentSpec(random_warp=True, random_flip=False, scale=0.05),
        repeat_unwarped_every=3,
    ),
}


def recipe(name: str) -> Recipe:
    try:
        return RECIPES[name.lower()]
    except KeyError:
        raise ValueError(f"unknown model {name!r}: use one of {', '.join(sorted(RECIPES))}") from None
