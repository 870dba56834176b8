"""Client-level differential privacy for federated rounds (DP-FedAvg, McMahan et al. 2018).

A client clips its update to L2 norm `clip` and counts as one client, whatever its rows (so one
client moves the round's sum by at most `clip`); the server adds Gaussian noise of standard
deviation `noise_multiplier * clip` to the sum of the round's updates (the Gaussian mechanism) and
averages over the clients that reported. Clipping is the client's, so it holds under secure
aggregation too, where the server sees only the sum.

The privacy spent after some rounds is computed by Opacus' RDP accountant (Mironov 2017; Mironov,
Talwar and Zhang 2019) with the round's share of the clients as the sampling rate. That analysis
is for clients sampled independently (Poisson); a round here asks a fixed number of them, the
usual approximation (as in DP-FedAvg's own accounting).

The noise comes from numpy's generator seeded from the operating system's entropy, not from the
job's seed: noise that anyone with the spec could draw again would protect nothing. It is not
hardened against attacks on floating-point sampling (Mironov 2012).
"""

from __future__ import annotations

import secrets
import warnings
from collections import Counter
from collections.abc import Sequence

import numpy as np

from elastrain.federated.strategy import ClientUpdate, RoundSum
from elastrain.spec.federated import PrivacySpec


def clipped(update: ClientUpdate, privacy: PrivacySpec) -> ClientUpdate:
    """A client's update as it reports it under `privacy`: its delta scaled down to L2 norm at most
    `privacy.clip`, and weight 1."""
    norm = float(np.linalg.norm(update.delta))
    scale = min(1.0, privacy.clip / norm) if norm > 0 else 1.0
    return ClientUpdate(update.delta * scale, 1)


def noised(summed: RoundSum, privacy: PrivacySpec, rng: np.random.Generator | None = None) -> RoundSum:
    """The round's sum of clipped updates with Gaussian noise of standard deviation
    `noise_multiplier * clip` added to every coordinate; `rng` defaults to one seeded from the
    operating system's entropy."""
    rng = rng or np.random.default_rng(secrets.randbits(128))
    noise = rng.normal(0.0, privacy.noise_multiplier * privacy.clip, summed.weighted_delta.shape)
    return RoundSum(summed.weighted_delta + noise, summed.examples, summed.clients)


def epsilon(privacy: PrivacySpec, sample_rates: Sequence[float]) -> float:
    """The epsilon of the (epsilon, `privacy.delta`) client-level privacy spent by rounds that
    asked the shares `sample_rates` of the clients, one per round released (Opacus' RDP
    accountant).

    Raises:
        ValueError: a sample rate outside (0, 1].
    """
    if any(not 0 < rate <= 1 for rate in sample_rates):
        raise ValueError(f"a sample rate outside (0, 1] in {list(sample_rates)}")
    if not sample_rates:
        return 0.0
    from opacus.accountants import RDPAccountant

    accountant = RDPAccountant()
    accountant.history = [(privacy.noise_multiplier, rate, count) for rate, count in Counter(sample_rates).items()]
    with warnings.catch_warnings():
        # Opacus warns when the best order is at the end of its range: with so little noise that
        # epsilon is huge, where a tighter bound would change nothing a user decides
        warnings.simplefilter("ignore", UserWarning)
        return float(accountant.get_epsilon(privacy.delta))
