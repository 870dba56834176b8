"""The REST control plane."""

from elastrain.api.app import create_app

__all__ = ["create_app"]
