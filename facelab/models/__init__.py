"""Trainable face-swap networks (nn.Modules that describe themselves with a config).

Pipelines (training, merging) live elsewhere; `create_model(name, **options)` is the one factory,
and `folder.load_network` the one way to a saved network.
"""

from facelab.models.registry import create_model, list_models

__all__ = ["create_model", "list_models"]
