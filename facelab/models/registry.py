"""One registry and one factory: `create_model("saehd", resolution=128, archi="liae-ud")`.

Every network keeps its name and options in `model.config`, which the model folder saves in
config.json (see folder.py), so a saved network describes itself and loads without running
any code from the file.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from facelab.models import options as architecture
from facelab.models.amp import AMPNet
from facelab.models.archi import Autoencoder
from facelab.models.xseg import XSegNet

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
    architecture.check("quick96", opts)
    return Autoencoder(**opts)


@register_model("saehd", {"resolution": 128, "archi": "liae-ud", "ae_dims": 256, "e_dims": 64, "d_dims": 64,
                          "d_mask_dims": 22})  # fmt: skip
def saehd(**opts) -> nn.Module:
    """SAEHD's network: DF or LIAE with any of -u, -d, -t (training options come with the trainer)."""
    architecture.check("saehd", opts)
    return Autoencoder(**opts)


@register_model("amp", {"resolution": 224, "ae_dims": 256, "inter_dims": 1024, "e_dims": 64, "d_dims": 64,
                        "d_mask_dims": 22, "morph_factor": 0.5})  # fmt: skip
def amp(**opts) -> nn.Module:
    """AMP: one encoder/decoder, two fixed random inters mixed by a morph factor (live use)."""
    architecture.check("amp", opts)
    return AMPNet(**opts)


@register_model("xseg", {"resolution": 256, "base_ch": 32})
def xseg(**opts) -> nn.Module:
    """XSeg: the reference's occlusion-mask U-Net (256 px, 17.6 M parameters at base 32)."""
    architecture.check("xseg", opts)
    return XSegNet(**opts)
