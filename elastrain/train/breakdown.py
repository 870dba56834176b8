"""Where a worker's training step spends its time: compute, all-reduce, and everything else.

Measured on every step with `time.perf_counter` (a few calls per step), so that a throughput
regression shows which part grew without a profiler.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class StepBreakdown:
    """Seconds spent in consecutive steps, summed over the steps measured.

    A step is measured from the end of the previous step to its own end (its interval). An
    interval that holds an evaluation, a re-formation of the group or a pause is not measured:
    :meth:`interrupt` ends the chain, and the next step only starts it again.

    Attributes:
        compute_s: forward, backward and optimizer update.
        all_reduce_s: the collective that adds up the gradients (and the loss) over the group.
        interval_s: the whole of the measured steps' intervals; what is neither compute nor
            all-reduce is bookkeeping (the gradient buffer, the gradient-noise measurement, the
            checks, step callbacks, the loop).
        steps: steps measured.
    """

    compute_s: float = 0.0
    all_reduce_s: float = 0.0
    interval_s: float = 0.0
    steps: int = 0
    last_end: float | None = None

    def add(self, compute_s: float, all_reduce_s: float, end: float) -> None:
        """A step ended at `end` (perf_counter seconds) after `compute_s` and `all_reduce_s`."""
        if self.last_end is not None:
            self.compute_s += compute_s
            self.all_reduce_s += all_reduce_s
            self.interval_s += end - self.last_end
            self.steps += 1
        self.last_end = end

    def interrupt(self) -> None:
        """Something other than training runs before the next step: its interval is not measured."""
        self.last_end = None

    def as_ms(self) -> dict[str, float] | None:
        """Mean milliseconds per step: {"compute", "all_reduce", "bookkeeping", "total"} (total is
        the mean interval; bookkeeping the rest of it); None before two consecutive steps."""
        if not self.steps:
            return None
        compute, all_reduce, total = (1000 * seconds / self.steps
                                      for seconds in (self.compute_s, self.all_reduce_s, self.interval_s))
        return {"compute": round(compute, 3), "all_reduce": round(all_reduce, 3),
                "bookkeeping": round(total - compute - all_reduce, 3), "total": round(total, 3)}
