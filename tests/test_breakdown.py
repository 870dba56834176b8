"""The step breakdown's arithmetic: which intervals count, and the means it reports."""

from elastrain.train.breakdown import StepBreakdown


def test_only_intervals_between_consecutive_steps_count():
    breakdown = StepBreakdown()
    assert breakdown.as_ms() is None
    breakdown.add(0.5, 0.5, end=10.0)        # the first step: no interval before it
    breakdown.add(0.004, 0.002, end=10.010)  # 10 ms: 4 compute, 2 all-reduce, 4 the rest
    breakdown.interrupt()                    # an evaluation: the next interval holds it
    breakdown.add(0.004, 0.002, end=11.0)
    breakdown.add(0.006, 0.002, end=11.014)  # 14 ms: 6, 2, 6
    assert breakdown.steps == 2
    assert breakdown.as_ms() == {"compute": 5.0, "all_reduce": 2.0, "bookkeeping": 5.0, "total": 12.0}
