"""The `federated:` section of a spec: a job trained in rounds by clients that keep their data.

Each round the server sends the global model to some clients; each trains it on its own rows
for `local_epochs` and sends back only its update; the server aggregates the updates by the
strategy into the next global model (`elastrain.federated.strategy`).
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

STRATEGIES = ("fedavg", "fedprox", "fedadam")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PrivacySpec(_Strict):
    """Client-level differential privacy (DP-FedAvg, McMahan et al. 2018): each client's update is
    clipped to L2 norm `clip`, and the server adds Gaussian noise of standard deviation
    `noise_multiplier * clip` to their sum."""

    clip: float = Field(gt=0, description="the L2 norm each client's update is clipped to")
    noise_multiplier: float = Field(gt=0, description="the noise's standard deviation over `clip`")
    delta: float = Field(1e-5, gt=0, lt=1, description="the delta of the (epsilon, delta) privacy reported")


class FederatedSpec(_Strict):
    """How a federated job's rounds run.

    `clients_per_round` is a count (an integer, at least 1) or a fraction of the clients connected
    (a number in (0, 1]). A round goes ahead once `min_clients` have reported before
    `round_deadline_s`; clients later than that are cut (counted, not failed). With fewer than
    `min_clients` connected the job waits, and fails after `wait_timeout_s`.

    Strategies: `fedavg` (McMahan et al. 2017: the mean of the clients' models weighted by their
    examples), `fedprox` (Li et al. 2020: the same mean; each client adds `proximal_mu / 2 *
    ||w - w_global||^2` to its loss), `fedadam` (Reddi et al. 2021, Algorithm 2: the weighted mean
    update fed to a server-side Adam with `server_lr`, `beta1`, `beta2`, `tau`).
    """

    rounds: int = Field(10, ge=1, le=100_000)
    clients_per_round: int | float = Field(10, description="a count (>= 1) or a fraction of the connected "
                                                           "clients (in (0, 1])")
    min_clients: int = Field(2, ge=1, description="clients that must report for a round to count")
    local_epochs: int = Field(1, ge=1, le=10_000)
    local_batch_size: int = Field(32, ge=1)
    strategy: Literal["fedavg", "fedprox", "fedadam"] = "fedavg"
    proximal_mu: float | None = Field(None, ge=0, description="FedProx's proximal weight (default 0.01)")
    server_lr: float | None = Field(None, gt=0, description="FedAdam's server learning rate (default 0.1)")
    beta1: float = Field(0.9, ge=0, lt=1)
    beta2: float = Field(0.99, ge=0, lt=1)
    tau: float = Field(1e-9, gt=0, description="FedAdam's adaptivity: added to the root of the second moment")
    round_deadline_s: float = Field(120.0, gt=0)
    wait_timeout_s: float = Field(600.0, gt=0)
    secure_aggregation: bool = False
    privacy: PrivacySpec | None = None

    @model_validator(mode="after")
    def _fits(self) -> FederatedSpec:
        count = self.clients_per_round
        if isinstance(count, float) and not 0 < count <= 1:
            raise ValueError(f"clients_per_round {count} is neither a count (an integer >= 1) nor a fraction in "
                             "(0, 1]; write e.g. 10 or 0.2")
        if isinstance(count, int) and count < 1:
            raise ValueError(f"clients_per_round must be at least 1, not {count}")
        if isinstance(count, int) and self.min_clients > count:
            raise ValueError(f"min_clients {self.min_clients} is more than clients_per_round {count}; lower it")
        if self.proximal_mu is not None and self.strategy != "fedprox":
            raise ValueError(f"proximal_mu applies to strategy fedprox, not {self.strategy}; remove it")
        if self.server_lr is not None and self.strategy != "fedadam":
            raise ValueError(f"server_lr applies to strategy fedadam, not {self.strategy}; remove it")
        return self

    @property
    def mu(self) -> float:
        """FedProx's proximal weight: `proximal_mu`, 0.01 left out; 0 for the other strategies."""
        if self.strategy != "fedprox":
            return 0.0
        return 0.01 if self.proximal_mu is None else self.proximal_mu

    @property
    def eta(self) -> float:
        """FedAdam's server learning rate: `server_lr`, or 0.1 (Flower's default) left out."""
        return 0.1 if self.server_lr is None else self.server_lr

    def clients_in_round(self, connected: int) -> int:
        """How many of `connected` clients a round asks: the count (at most those connected), or
        the fraction of them rounded up, and never fewer than `min_clients` while that many are
        connected."""
        count = self.clients_per_round
        wanted = count if isinstance(count, int) else math.ceil(count * connected)
        return min(connected, max(wanted, self.min_clients))
