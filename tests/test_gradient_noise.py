"""The gradient noise a group of workers measures from the sums it already adds up, against a
direct computation from every training sample's own gradient."""

import threading

import pytest
import torch

from elastrain.data import prepare_dataset
from elastrain.spec import parse_spec
from elastrain.train import Trainer, fit
from elastrain.train.losses import loss_sum
from elastrain.train.noise import GradientNoiseEstimate, local_batch_harmonic
from tests.test_reference import ThreadGroup

# A learning rate this small leaves the parameters where they started, so the truth the
# estimates are compared with is one fixed point's.
FROZEN = """
data: {source: 'builtin:digits'}
model: {kind: softmax}
train: {optimizer: sgd, lr: 1.0e-9, batch_size: 100, max_steps: 300}
"""


def per_sample_truth(trainer: Trainer) -> tuple[float, float]:
    """(|G|^2, tr(S)) over the training set at the trainer's parameters: G the mean of the
    samples' gradients, S their covariance (denominator N - 1, which is what sampling batches
    without replacement makes the estimator converge to)."""
    grads = []
    for i in range(trainer.n_train):
        trainer.model.zero_grad()
        loss_sum(trainer.loss_name, trainer.model(torch.from_numpy(trainer.data.x_train[i:i + 1])),
                 torch.from_numpy(trainer.data.y_train[i:i + 1])).backward()
        grads.append(torch.cat([p.grad.reshape(-1).double() for p in trainer.params]))
    stacked = torch.stack(grads)
    return float(stacked.mean(0).square().sum()), float(stacked.var(0, unbiased=True).sum())


@pytest.mark.parametrize("world_size", [2, 3])
def test_workers_measure_the_gradient_noise_of_the_training_set(world_size):
    # 100 samples over 3 workers: shares of 34, 33, 33 (the harmonic mean of the shares is used).
    spec = parse_spec(FROZEN)
    data = prepare_dataset(spec)
    group = ThreadGroup(world_size)
    replicas = [Trainer(spec, data, group.member(rank)) for rank in range(world_size)]
    threads = [threading.Thread(target=fit, args=(replica,)) for replica in replicas]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    sqr, trace = per_sample_truth(Trainer(spec, data))
    measured = [replica.gradient_noise() for replica in replicas]
    assert all(m == measured[0] for m in measured)   # every replica holds the same estimate
    got_sqr, got_var = measured[0]
    # Measured here: within 0.4 % (|G|^2) and 1.6 % (tr S) after 300 smoothed steps; the
    # gradient noise scale tr(S)/|G|^2 is about 31, so noise dominates each step's gradient.
    assert got_sqr == pytest.approx(sqr, rel=0.05)
    assert got_var * spec.train.batch_size == pytest.approx(trace, rel=0.05)


def test_one_worker_measures_no_noise_and_the_estimate_travels_with_the_state():
    spec = parse_spec(FROZEN.replace("max_steps: 300", "max_steps: 5"))
    data = prepare_dataset(spec)
    alone = Trainer(spec, data)
    fit(alone)
    assert alone.gradient_noise() is None
    group = ThreadGroup(2)
    pair = [Trainer(spec, data, group.member(rank)) for rank in range(2)]
    threads = [threading.Thread(target=fit, args=(replica,)) for replica in pair]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert pair[0].gradient_noise() is not None
    alone.load_state_dict(pair[0].state_dict())   # a replica that joins takes the group's estimate
    assert alone.gradient_noise() == pair[0].gradient_noise()


def test_the_estimator_recovers_known_statistics_and_skips_what_it_cannot_use():
    # Exact expectations: |g_b|^2 = |G|^2 + tr(S)/b for b = 25 and B = 50, |G|^2 = 4, tr(S) = 100.
    estimate = GradientNoiseEstimate()
    assert not estimate.measured and estimate.sqr == estimate.trace == 0.0
    assert estimate.update(4 + 100 / 25, 4 + 100 / 50, 25, 50)
    assert estimate.sqr == pytest.approx(4.0) and estimate.trace == pytest.approx(100.0)
    assert not estimate.update(8.0, 6.0, 50, 50)              # one worker: no second measurement
    assert not estimate.update(float("inf"), 6.0, 25, 50)     # an overflowed norm is not averaged in
    assert estimate.sqr == pytest.approx(4.0)
    assert local_batch_harmonic(100, 3) == (3, pytest.approx(3 / (1 / 34 + 2 / 33)))
    assert local_batch_harmonic(2, 3) == (2, 1.0)             # a worker without samples does not count
