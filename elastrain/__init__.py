"""elastrain: train machine-learning models on elastic compute."""

__version__ = "0.1.0"
