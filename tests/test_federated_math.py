"""Federated training's pure parts (issue 32): the strategies' aggregation against its reference
formulas, the round's spec, and the seeded Dirichlet split of rows over simulated clients."""

import numpy as np
import pytest
from pydantic import ValidationError
from sklearn.datasets import load_digits

from elastrain.errors import UserError
from elastrain.federated.partition import parse_partition, partition
from elastrain.federated.privacy import clipped, epsilon, noised
from elastrain.federated.strategy import ClientUpdate, ServerState, aggregate, round_sum
from elastrain.spec.federated import FederatedSpec, PrivacySpec

RNG = np.random.default_rng(0)


def updates(count: int, size: int = 50) -> list[ClientUpdate]:
    return [ClientUpdate(RNG.normal(size=size), int(RNG.integers(1, 500))) for _ in range(count)]


def test_fedavg_is_the_examples_weighted_mean_of_the_clients_models():
    """McMahan et al. 2017: the next global model is sum_i n_i w_i / sum_i n_i over the clients'
    trained weights w_i; from the round's sums alone (what secure aggregation leaves the server)."""
    weights = RNG.normal(size=50)
    reports = updates(7)
    state = aggregate(FederatedSpec(strategy="fedavg"), ServerState(weights), round_sum(reports))
    expected = np.average([weights + r.delta for r in reports], axis=0, weights=[r.examples for r in reports])
    assert np.allclose(state.weights, expected, rtol=0, atol=1e-12) and state.rounds == 1
    fedprox = aggregate(FederatedSpec(strategy="fedprox"), ServerState(weights), round_sum(reports[::-1]))
    assert np.allclose(fedprox.weights, expected, rtol=0, atol=1e-12)   # the same mean, in any order


def test_fedadam_follows_reddi_et_al_algorithm_2():
    """Reddi et al. 2021, Algorithm 2, with no bias correction: after one round
    w1 = w0 + eta (1 - beta1) d / (sqrt(1 - beta2) |d| + tau), d the weighted mean update; the
    moments carry over to the next round."""
    spec = FederatedSpec(strategy="fedadam", server_lr=0.05, beta1=0.9, beta2=0.99, tau=1e-3)
    weights = RNG.normal(size=50)
    first, second = updates(5), updates(5)
    one = aggregate(spec, ServerState(weights), round_sum(first))
    d1 = round_sum(first).weighted_delta / round_sum(first).examples
    assert np.allclose(one.weights, weights + 0.05 * 0.1 * d1 / (np.sqrt(0.01) * np.abs(d1) + 1e-3), atol=1e-12)
    two = aggregate(spec, one, round_sum(second))
    d2 = round_sum(second).weighted_delta / round_sum(second).examples
    m = 0.9 * 0.1 * d1 + 0.1 * d2
    v = 0.99 * 0.01 * d1 ** 2 + 0.01 * d2 ** 2
    assert np.allclose(two.weights, one.weights + 0.05 * m / (np.sqrt(v) + 1e-3), atol=1e-12) and two.rounds == 2


def test_a_round_refuses_no_updates_updates_of_other_sizes_and_no_examples():
    with pytest.raises(ValueError, match="at least one"):
        round_sum([])
    with pytest.raises(ValueError, match="shape"):
        round_sum([ClientUpdate(np.zeros(3), 1), ClientUpdate(np.zeros(4), 1)])
    with pytest.raises(ValueError, match="no examples"):
        aggregate(FederatedSpec(), ServerState(np.zeros(3)), round_sum([ClientUpdate(np.ones(3), 0)]))


def test_the_round_spec_takes_a_count_or_a_fraction_and_says_what_does_not_fit():
    assert FederatedSpec(clients_per_round=10, min_clients=2).clients_in_round(50) == 10
    assert FederatedSpec(clients_per_round=10, min_clients=2).clients_in_round(4) == 4
    assert FederatedSpec(clients_per_round=0.2, min_clients=2).clients_in_round(50) == 10
    assert FederatedSpec(clients_per_round=0.01, min_clients=3).clients_in_round(50) == 3
    assert FederatedSpec(strategy="fedprox").mu == 0.01 and FederatedSpec().mu == 0.0
    for fields, message in (({"clients_per_round": 1.5}, "neither a count"),
                            ({"clients_per_round": 3, "min_clients": 5}, "more than clients_per_round"),
                            ({"proximal_mu": 0.1}, "applies to strategy fedprox"),
                            ({"server_lr": 0.1, "strategy": "fedprox"}, "applies to strategy fedadam"),
                            ({"strategy": "krum"}, "fedavg")):
        with pytest.raises(ValidationError, match=message):
            FederatedSpec(**fields)


def test_a_dirichlet_split_covers_every_row_once_is_seeded_and_skews_labels_as_alpha_falls():
    labels = load_digits().target
    parts = partition(labels, 50, "dirichlet", 0.5, seed=3, min_rows=5)
    joined = np.concatenate(parts)
    assert len(joined) == len(labels) and len(np.unique(joined)) == len(labels)
    assert min(len(p) for p in parts) >= 5
    again = partition(labels, 50, "dirichlet", 0.5, seed=3, min_rows=5)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(parts, partition(labels, 50, "dirichlet", 0.5, seed=4,
                                                                          min_rows=5), strict=True))

    def skew(alpha: float) -> float:   # the mean share of each client's most common class
        split = partition(labels, 20, "dirichlet", alpha, seed=0)
        return float(np.mean([np.bincount(labels[p]).max() / len(p) for p in split]))

    assert skew(0.1) > skew(1.0) > skew(100.0)
    iid = partition(labels, 7, "iid", None, seed=0)
    assert sorted(len(p) for p in iid)[-1] - sorted(len(p) for p in iid)[0] <= 1


def test_a_partition_that_cannot_be_drawn_says_so():
    assert parse_partition("dirichlet:0.5") == ("dirichlet", 0.5) and parse_partition("iid") == ("iid", None)
    for text in ("dirichlet:0", "dirichlet:x", "pathological", "iid:3"):
        with pytest.raises(UserError, match="dirichlet:ALPHA"):
            parse_partition(text)
    with pytest.raises(UserError, match="cannot give 100 clients"):
        partition(np.zeros(50, np.int64), 100, "iid", None, seed=0)
    with pytest.raises(UserError, match="raise alpha"):
        partition(load_digits().target, 100, "dirichlet", 0.01, seed=0, min_rows=15)


def test_client_level_privacy_clips_each_update_and_noises_the_sum_at_its_scale():
    """DP-FedAvg (McMahan et al. 2018): an update longer than `clip` is scaled to norm `clip`, a
    shorter one is kept, and each weighs 1 client; the server's noise on the sum has standard
    deviation noise_multiplier * clip (measured over 200,000 coordinates) and mean 0."""
    privacy = PrivacySpec(clip=0.5, noise_multiplier=1.3)
    long, short = ClientUpdate(np.full(100, 1.0), 40), ClientUpdate(np.full(100, 0.01), 7)
    assert np.linalg.norm(clipped(long, privacy).delta) == pytest.approx(0.5, rel=1e-12)
    assert np.array_equal(clipped(short, privacy).delta, short.delta)
    assert clipped(long, privacy).examples == clipped(short, privacy).examples == 1
    summed = round_sum([ClientUpdate(np.zeros(200_000), 1)] * 3)
    noise = noised(summed, privacy, np.random.default_rng(1)).weighted_delta
    assert noise.std() == pytest.approx(1.3 * 0.5, rel=0.01) and abs(noise.mean()) < 0.01
    assert summed.weighted_delta.max() == 0   # the sum itself is left as it was
    fresh = [noised(summed, privacy).weighted_delta[:5] for _ in range(2)]
    assert not np.array_equal(*fresh)   # drawn from the system's entropy, never again the same


def test_the_privacy_spent_is_renyi_accounting_of_the_rounds():
    """With every client asked (sampling rate 1), T rounds of the Gaussian mechanism with noise
    multiplier s have RDP T * a / (2 s^2) at order a (Mironov 2017, Prop. 7 and 1), turned into
    (epsilon, delta) by Balle et al. 2020, Theorem 21, minimized over the accountant's orders. A
    sampled round costs less, epsilon grows with the rounds (of any rate) and falls with the noise;
    a sampling rate outside (0, 1] is refused."""
    privacy = PrivacySpec(clip=1.0, noise_multiplier=2.0, delta=1e-5)
    orders = np.array([1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64)))
    rdp = 10 * orders / (2 * 2.0**2)
    expected = np.min(rdp - (np.log(1e-5) + np.log(orders)) / (orders - 1) + np.log((orders - 1) / orders))
    assert epsilon(privacy, [1.0] * 10) == pytest.approx(expected, rel=1e-9)
    assert epsilon(privacy, [0.2] * 10) < epsilon(privacy, [1.0] * 10)
    assert epsilon(privacy, [0.2] * 10) < epsilon(privacy, [0.2] * 10 + [0.5]) < epsilon(privacy, [0.2] * 30)
    assert epsilon(PrivacySpec(clip=1.0, noise_multiplier=4.0), [0.2] * 30) < epsilon(privacy, [0.2] * 30)
    assert epsilon(privacy, []) == 0.0
    with pytest.raises(ValueError, match="outside"):
        epsilon(privacy, [0.5, 1.5])
    with pytest.raises(ValidationError):
        PrivacySpec(clip=1.0, noise_multiplier=0)
