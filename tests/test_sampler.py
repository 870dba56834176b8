"""The elastic sampler: deterministic epochs, exactly-once coverage however batches are split."""

import numpy as np

from elastrain.data.sampler import epoch_order, global_batch, shard


def test_epoch_order_is_a_seeded_permutation():
    order = epoch_order(100, 3, 0)
    assert sorted(order) == list(range(100))
    assert np.array_equal(order, epoch_order(100, 3, 0))
    assert not np.array_equal(order, epoch_order(100, 3, 1))
    assert not np.array_equal(order, epoch_order(100, 4, 0))


def test_batches_with_changing_worker_counts_cover_the_epoch_once():
    n, batch = 103, 10
    seen = []
    position = 0
    for step, world in enumerate([1, 3, 3, 2, 4, 1, 2, 3, 3, 2, 1]):
        indices = global_batch(n, 0, 0, position, batch)
        shares = [shard(indices, rank, world) for rank in range(world)]
        assert max(map(len, shares)) - min(map(len, shares)) <= 1
        seen.extend(np.concatenate(shares).tolist())
        position += len(indices)
        if position >= n:
            assert step == 10
            break
    assert sorted(seen) == list(range(n))
