"""The architecture options of SAEHD and AMP as typed specs: the model's own check of its options
(registry) and the training options the user sets (train/model_options.py) are the same specs."""

from __future__ import annotations

from facelab.models.archi import parse_archi
from facelab.options import Option


def _archi(value: str) -> str:
    parse_archi(value)
    return value.lower()


def _even(value: int) -> int:
    if value % 2:
        raise ValueError(f"must be even, not {value}")
    return value


def _multiple_of_32(value: int) -> int:
    if value % 32:
        raise ValueError(f"must be a multiple of 32, not {value}")
    return value


def _multiple_of_64(value: int) -> int:
    if value % 64:
        raise ValueError(f"must be a multiple of 64, not {value}")
    return value


RESOLUTION = Option("resolution", int, 128, "face size in pixels; a multiple of 16 (of 32 with -d)",
                    range=(64, 640), changeable=False)  # fmt: skip
ARCHI = Option("archi", str, "liae-ud",
               "df or liae, with any of -u (pixel norm), -d (double res), -t (deeper)",
               changeable=False, check=_archi)  # fmt: skip
AE_DIMS = Option("ae_dims", int, 256, "autoencoder (bottleneck) width", range=(32, 1024), changeable=False)
E_DIMS = Option("e_dims", int, 64, "encoder width", range=(16, 256), changeable=False, check=_even)
D_DIMS = Option("d_dims", int, 64, "decoder width", range=(16, 256), changeable=False, check=_even)
D_MASK_DIMS = Option("d_mask_dims", int, 22, "mask decoder width", range=(16, 256), changeable=False,
                     check=_even)  # fmt: skip
AMP_RESOLUTION = Option("resolution", int, 224, "face size in pixels, a multiple of 32", range=(64, 640),
                        changeable=False, check=_multiple_of_32)  # fmt: skip
INTER_DIMS = Option("inter_dims", int, 1024, "width of the two inters", range=(32, 2048), changeable=False)
MORPH_FACTOR = Option("morph_factor", float, 0.5, "share of src channels mixed in training", range=(0.1, 0.5),
                      changeable=False)  # fmt: skip

# Quick96 is fixed (96 px, ae 128, e/d 64, mask 16) but tests build smaller ones: these bounds only
# keep a damaged or hostile config.json from asking for terabytes before anything is checked.
QUICK96 = [
    Option("resolution", int, 96, "face size in pixels", range=(16, 640)),
    Option("archi", str, "df-ud", "df or liae, with any of -u, -d, -t", check=_archi),
    Option("ae_dims", int, 128, "autoencoder width", range=(8, 1024)),
    *(Option(name, int, default, "width", range=(4, 256))
      for name, default in (("e_dims", 64), ("d_dims", 64), ("d_mask_dims", 16))),
]  # fmt: skip

XSEG = [
    Option("resolution", int, 256, "face size in pixels, a multiple of 64", range=(64, 1024),
           changeable=False, check=_multiple_of_64),
    Option("base_ch", int, 32, "width of the first level", range=(4, 128), changeable=False),
]  # fmt: skip

ARCHITECTURE = {
    "quick96": QUICK96,
    "saehd": [RESOLUTION, ARCHI, AE_DIMS, E_DIMS, D_DIMS, D_MASK_DIMS],
    "amp": [AMP_RESOLUTION, AE_DIMS, INTER_DIMS, E_DIMS, D_DIMS, D_MASK_DIMS, MORPH_FACTOR],
    "xseg": XSEG,
}


def check(model: str, options: dict) -> None:
    """ValueError naming the option and its range for any value its spec refuses."""
    specs = {o.name: o for o in ARCHITECTURE.get(model, [])}
    for key, value in options.items():
        if key in specs:
            specs[key].parse(value)
