"""The order of a sharded epoch (`elastrain.data.stream_order`): every training row exactly once
per epoch whatever the group does, the same order for the same (seed, epoch, pieces), and each
member reading only its own pieces."""

import numpy as np
import pytest

from elastrain.data.stream_order import batch_place, epoch_plan, pieces_of

COUNTS = (70, 0, 33, 128, 5, 64, 64, 91, 1, 40)   # training rows per piece; one piece has none


def row_ids(counts: tuple[int, ...], place) -> np.ndarray:
    """A unique id per (piece, row), for counting."""
    starts = np.concatenate([[0], np.cumsum(counts)])
    return starts[place.piece] + place.row


@pytest.mark.parametrize("window", [1, 100, 250, 10_000])
def test_an_epoch_visits_every_row_once_while_the_batch_and_world_size_change(window):
    total = sum(COUNTS)
    rng = np.random.default_rng(0)
    for epoch in range(3):
        plan = epoch_plan(COUNTS, 7, epoch, window)
        seen, position = [], 0
        while position < total:
            batch = int(rng.integers(1, 80))
            world = int(rng.integers(1, 5))
            place = batch_place(plan, 7, epoch, position, batch)
            assert len(place.piece) == min(batch, total - position)
            owners = [place.owned_by(rank, world) for rank in range(world)]
            assert (np.sum(owners, axis=0) == 1).all()   # each sample computed by exactly one member
            seen.append(row_ids(COUNTS, place))
            position += len(place.piece)
        ids = np.concatenate(seen)
        assert sorted(ids.tolist()) == list(range(total))


def test_the_order_is_a_function_of_seed_epoch_and_pieces_and_differs_between_epochs():
    def epoch_ids(seed: int, epoch: int) -> list[int]:
        plan = epoch_plan(COUNTS, seed, epoch, 120)
        return row_ids(COUNTS, batch_place(plan, seed, epoch, 0, sum(COUNTS))).tolist()

    assert epoch_ids(3, 1) == epoch_ids(3, 1)
    epoch_plan.cache_clear()
    assert epoch_ids(3, 1) == epoch_ids(3, 1)
    assert epoch_ids(3, 1) != epoch_ids(3, 2) and epoch_ids(3, 1) != epoch_ids(4, 1)


def test_a_batch_split_at_any_position_is_the_same_batch():
    plan = epoch_plan(COUNTS, 1, 0, 100)
    whole = row_ids(COUNTS, batch_place(plan, 1, 0, 50, 200))
    parts = [row_ids(COUNTS, batch_place(plan, 1, 0, start, size)) for start, size in ((50, 37), (87, 163))]
    assert np.concatenate(parts).tolist() == whole.tolist()


def test_windows_hold_at_least_the_window_and_a_member_reads_only_its_pieces():
    window = 150
    plan = epoch_plan(COUNTS, 5, 0, window)
    sizes = np.diff(plan.window_rows)
    assert (sizes[:-1] >= window).all() and sizes.sum() == sum(COUNTS)
    assert 1 not in plan.pieces.tolist()   # the piece without training rows is never read
    world = 3
    position = 0
    while position < sum(COUNTS):
        place = batch_place(plan, 5, 0, position, 64)
        window_index = plan.window_of(position)
        for rank in range(world):
            mine = set(place.piece[place.owned_by(rank, world)].tolist())
            readable = set(pieces_of(plan, window_index, rank, world).tolist()) | set(
                pieces_of(plan, window_index + 1, rank, world).tolist())
            assert mine <= readable
        position += len(place.piece)
    owned = [set(pieces_of(plan, w, r, world).tolist()) for w in range(plan.n_windows) for r in range(world)]
    assert sorted(p for s in owned for p in s) == sorted(plan.pieces.tolist())   # each piece read by one member


def test_a_window_larger_than_the_data_shuffles_the_whole_epoch():
    plan = epoch_plan(COUNTS, 2, 0, 10**9)
    assert plan.n_windows == 1
    ids = row_ids(COUNTS, batch_place(plan, 2, 0, 0, 100))
    # rows drawn from the whole data set, not from the first pieces only
    assert len({int(np.searchsorted(np.cumsum(COUNTS), i, side="right")) for i in ids}) >= 6
