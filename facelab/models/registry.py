"""One registry and one factory: `create_model("saehd", resolution=128, archi="liae-ud")`.

Every network keeps its name and options in `model.config`, which the model folder saves in
config.json (see folder.py), so a saved network describes itself and loads without running
any code from the file.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from facelab.models.amp import AMPNet
from facelab.models.archi import Autoencoder

# name -> (builder, default architecture options)
_REGISTRY: dict[str, tuple[Callable[..., nn.Module], dict]] = {}


def register_model(name: str, defaults: dict):
    def wrap(builder: Callable[..., nn.Module]):
        _REGISTRY[name] = (builder, defaults)
        return builder

    return wrap


def list_models() -> list[str]:
    return sorted(_REGISTRY)


def model_options(name: str, **options) -> dict:
    if name not in _REGISTRY:
        raise ValueError(f"unknown model {name!r}: use one of {', '.join(list_models())}")
    defaults = _REGISTRY[name][1]
    unknown = set(options) - set(defaults)
    if unknown:
        raise ValueError(f"{name} has no option {', '.join(sorted(unknown))}")
    return defaults | options


def create_model(name: str, **options) -> nn.Module:
    opts = model_options(name, **options)
    model = _REGISTRY[name][0](**opts)
    model.config = {"name": name, **opts}
    return model


@register_model("quick96", {"resolution": 96, "archi": "df-ud", "ae_dims": 128, "e_dims": 64, "d_dims": 64,
                            "d_mask_dims": 16})  # fmt: skip
def quick96(**opts) -> nn.Module:
    """DeepFaceLab's fixed beginner model: 96 px full face, df-ud, 38 M parameters.

    The trainer uses the defaults; other values exist for tiny test models."""
    return Autoencoder(**opts)


def _check_saehd(resolution: int, ae_dims: int, e_dims: int, d_dims: int, d_mask_dims: int, **_) -> None:
    if not 64 <= resolution <= 640:
        raise ValueError(f"resolution must be 64-640, not {resolution}")
    if not 32 <= ae_dims <= 1024:
        raise ValueError(f"ae_dims must be 32-1024, not {ae_dims}")
    for key, value in (("e_dims", e_dims), ("d_dims", d_dims), ("d_mask_dims", d_mask_dims)):
        if not (16 <= value <= 256 and value % 2 == 0):
            raise ValueError(f"{key} must be even, 16-256, not {value}")


@register_model("saehd", {"resolution": 128, "archi": "liae-ud", "ae_dims": 256, "e_dims": 64, "d_dims": 64,
                          "d_mask_dims": 22})  # fmt: skip
def saehd(**opts) -> nn.Module:
    """SAEHD's network: DF or LIAE with any of -u, -d, -t (training options come with the trainer)."""
    _check_saehd(**opts)
    return Autoencoder(**opts)


@register_model("amp", {"resolution": 224, "ae_dims": 256, "inter_dims": 1024, "e_dims": 64, "d_dims": 64,
                        "d_mask_dims": 22, "morph_factor": 0.5})  # fmt: skip
def amp(**opts) -> nn.Module:
    """AMP: one encoder/decoder, two fixed random inters mixed by a morph factor (live use)."""
    if not 0.1 <= opts["morph_factor"] <= 0.5:
        raise ValueError(f"morph_factor must be 0.1-0.5, not {opts['morph_factor']}")
    return AMPNet(**opts)
