"""The model zoo and user models from `python:module:function`."""

from elastrain.models.zoo import build_model

__all__ = ["build_model"]
