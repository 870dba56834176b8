"""The elastic sampler: which samples make up each global batch.

The order of an epoch is a pure function of (seed, epoch), and progress through it is
a position counted in samples, so any worker group, of any size, that agrees on
(seed, epoch, position) agrees on the next batch. Resizes and failures resume from
that position: within an epoch no sample is skipped or repeated.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np


@lru_cache(maxsize=4)
def epoch_order(n_samples: int, seed: int, epoch: int) -> np.ndarray:
    """The permutation of range(n_samples) that epoch `epoch` visits, read-only."""
    order = np.random.default_rng([seed, epoch]).permutation(n_samples)
    order.flags.writeable = False
    return order


def global_batch(n_samples: int, seed: int, epoch: int, position: int, batch_size: int) -> np.ndarray:
    """The sample indices of the next global batch.

    Args:
        n_samples: size of the training set.
        seed: the job's seed.
        epoch: the current epoch.
        position: samples of this epoch already consumed.
        batch_size: the global batch size; the last batch of an epoch may be smaller.

    Returns:
        Indices into the training set (int64), at most `batch_size` of them.
    """
    return epoch_order(n_samples, seed, epoch)[position:position + batch_size]


def shard(indices: np.ndarray, rank: int, world_size: int) -> np.ndarray:
    """This worker's contiguous share of a global batch; shares differ by at most one sample."""
    return np.array_split(indices, world_size)[rank]
