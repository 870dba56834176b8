"""Silencing torch's exporters and quantizers, which log and warn about what a CPU machine lacks."""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Iterator


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Silences the warnings and log lines of the exporters and quantizers for one call."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch.export", "torch.utils._pytree",
                                                    "torchao", "torch_pruning", "root")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
