"""The training step against independent references: least squares, bit-for-bit resume,
and the same update however the global batch is split over workers."""

import threading

import numpy as np
import pytest
import torch

from elastrain.data import prepare_dataset
from elastrain.spec import parse_spec
from elastrain.train import Trainer, fit


def test_gd_linear_regression_reaches_least_squares_on_diabetes():
    spec = parse_spec("""
data: {source: 'builtin:diabetes', scaling: standardize}
model: {kind: linear}
train: {optimizer: gd, loss: mse, lr: 0.2, epochs: 20000}
""")
    data = prepare_dataset(spec)
    trainer = Trainer(spec, data)
    fit(trainer)
    design = np.hstack([data.x_train.astype(np.float64), np.ones((len(data.y_train), 1))])
    reference, *_ = np.linalg.lstsq(design, data.y_train.astype(np.float64), rcond=None)
    linear = trainer.model
    got = np.concatenate([linear.weight.detach().double().numpy().ravel(), linear.bias.detach().double().numpy()])
    assert np.linalg.norm(got - reference) / np.linalg.norm(reference) < 1e-3


RESUME_SPEC = """
data: {source: 'builtin:digits'}
model: {kind: mlp, hidden: [32], dropout: 0.2}
train: {optimizer: adam, lr: 0.003, batch_size: 50, epochs: 3, schedule: {kind: cosine, warmup_steps: 5}}
"""


def test_resuming_mid_epoch_from_a_saved_state_gives_the_uninterrupted_parameters(tmp_path):
    spec = parse_spec(RESUME_SPEC)
    data = prepare_dataset(spec)
    uninterrupted = Trainer(spec, data)
    fit(uninterrupted)

    first = Trainer(spec, data)
    for _ in range(first.steps_per_epoch + 7):   # stop in the middle of the second epoch
        first.train_step()
    assert first.position > 0
    torch.save(first.state_dict(), tmp_path / "state.pt")
    torch.manual_seed(12345)                     # whatever happens in between must not matter

    resumed = Trainer(spec, data)
    resumed.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    fit(resumed)
    assert resumed.step == uninterrupted.step
    for (name, a), b in zip(uninterrupted.model.state_dict().items(), resumed.model.state_dict().values(),
                            strict=True):
        assert torch.equal(a, b), name


class ThreadGroup:
    """A real in-process collective: `world_size` threads add their tensors at a barrier."""

    def __init__(self, world_size: int) -> None:
        self.world_size = world_size
        self.barrier = threading.Barrier(world_size)
        self.slots: list = [None] * world_size

    def member(self, rank: int):
        group = self

        class Member:
            def __init__(self) -> None:
                self.rank, self.world_size = rank, group.world_size

            def all_reduce_sum(self, tensor: torch.Tensor) -> None:
                group.slots[rank] = tensor.clone()
                group.barrier.wait()
                total = group.slots[0].clone()
                for other in group.slots[1:]:
                    total += other
                group.barrier.wait()
                tensor.copy_(total)

        return Member()

    def fit(self, spec, data) -> tuple[list[Trainer], list]:
        """Train `spec` on `world_size` replicas in lock step, one thread each: the replicas and
        the outcome of `fit` on each."""
        replicas = [Trainer(spec, data, self.member(rank)) for rank in range(self.world_size)]
        outcomes: list = [None] * self.world_size
        threads = [threading.Thread(target=lambda r=r: outcomes.__setitem__(r, fit(replicas[r])))
                   for r in range(self.world_size)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return replicas, outcomes


@pytest.mark.parametrize("world_size", [2, 3])
def test_updates_do_not_depend_on_how_many_workers_share_the_batch(world_size):
    # batch 50 over 3 workers: shares of 17, 17, 16 samples, weighted by count.
    spec = parse_spec("""
data: {source: 'builtin:wine'}
model: {kind: mlp, hidden: [16]}
train: {optimizer: momentum, lr: 0.05, batch_size: 50, epochs: 4}
""")
    data = prepare_dataset(spec)
    single = Trainer(spec, data)
    fit(single)
    replicas, results = ThreadGroup(world_size).fit(spec, data)
    for replica in replicas:
        for a, b in zip(single.model.parameters(), replica.model.parameters(), strict=True):
            # Same math; only the order of float32 additions differs.
            torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)
    # Every replica reports the metrics of the whole validation set, summed over shares.
    assert results[0].metrics == results[-1].metrics
    assert results[0].metrics["accuracy"] == pytest.approx(single.evaluate()["accuracy"], abs=1.5 / len(data.y_val))
