"""Trainable face-swap networks (nn.Modules that describe themselves with a config).

Pipelines (training, merging) live elsewhere; `create_model(name, **options)` is the one factory.
"""

from facelab.models.registry import create_model, list_models, load_model

__all__ = ["create_model", "list_models", "load_model"]
