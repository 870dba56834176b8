"""XGBoost's collective over one generation of an elastic worker group.

XGBoost sums each tree level's gradient histograms with its own communicator (a ring formed
through a tracker), which cannot lose a member: a dead peer fails the operation in flight. So a
group holds one communicator per generation: rank 0 of each new generation starts a tracker and
hands its port to the others through the group's own collective, everyone joins, and the next
generation finalizes it and forms another, in the same processes.
"""

from __future__ import annotations

import contextlib
import re
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import torch

from elastrain.train.learner import Collective, PeerLost

T = TypeVar("T")

# What XGBoost's messages say when the communicator, not the training, failed (a peer died or
# went silent): its collective source files and operations.
_COLLECTIVE_FAILURE = re.compile(r"collective|allreduce|allgather|broadcast|socket|connect|tracker|timed? ?out",
                                 re.IGNORECASE)


def peer_lost(exc: Exception) -> bool:
    """Whether XGBoost raised `exc` because its communicator broke rather than for the training's sake."""
    return bool(_COLLECTIVE_FAILURE.search(str(exc)))


class BoosterComm:
    """XGBoost's communicator, formed for the group's current generation on demand.

    Args:
        timeout_s: how long an operation (and forming the ring) may wait for a silent peer before
            it fails (the job's `resources.hang_timeout_s`).
    """

    def __init__(self, timeout_s: float) -> None:
        self.timeout_s = timeout_s
        self.formed: tuple[int, int, int] | None = None   # (generation, rank, world size) joined
        self.tracker = None
        self.thread = ThreadPoolExecutor(1, thread_name_prefix="xgboost-comm")

    def run(self, work: Callable[[], T]) -> T:
        """`work()`, run on the thread XGBoost's communicator lives on; what it returns or raises."""
        return self.thread.submit(work).result()

    def ensure(self, collective: Collective) -> None:
        """Join XGBoost's communicator of the generation `collective` belongs to, forming it if this
        member has not yet (a group of one needs none). Call it from `run`.

        Raises:
            PeerLost: a peer was lost while the communicator formed.
        """
        membership = (getattr(collective, "generation", 0), collective.rank, collective.world_size)
        if membership == self.formed:
            return
        self.close()
        if collective.world_size > 1:
            self._join(collective)
        else:
            from xgboost import collective as xgb_collective

            if xgb_collective.is_distributed():   # XGBoost would still sum over a ring of another membership
                raise PeerLost("XGBoost's communicator of an earlier generation did not close")
        self.formed = membership

    def _join(self, collective: Collective) -> None:
        from xgboost import collective as xgb_collective
        from xgboost.tracker import RabitTracker

        host = getattr(collective, "master", "127.0.0.1")
        port = torch.zeros(1, dtype=torch.int64)
        if collective.rank == 0:
            self.tracker = RabitTracker(n_workers=collective.world_size, host_ip=host, sortby="task",
                                        timeout=int(self.timeout_s))
            self.tracker.start()
            port[0] = int(self.tracker.worker_args()["dmlc_tracker_port"])
        collective.all_reduce_sum(port)
        try:
            # One connection attempt: a member leaving a ring whose tracker is gone (its holder died
            # or left) would otherwise retry for 12 s before giving up; the group's own retries
            # (resources.retries_per_step) cover a ring that fails to form.
            xgb_collective.init(dmlc_tracker_uri=host, dmlc_tracker_port=int(port[0]),
                                dmlc_task_id=f"{collective.rank:06d}", dmlc_timeout=int(self.timeout_s),
                                dmlc_retry=1)
        except Exception as exc:
            self.close()
            raise PeerLost(f"XGBoost's communicator did not form: {str(exc).splitlines()[0]}") from exc

    def close(self) -> None:
        """Leave the communicator this member joined, if any (a broken one is torn down as well).
        Call it from `run`."""
        from xgboost import collective as xgb_collective

        if xgb_collective.is_distributed():
            # A ring whose tracker or peers are gone has nothing left to say goodbye to (XGBoost
            # warns of it, and fails: both expected here).
            with contextlib.suppress(Exception), warnings.catch_warnings():
                warnings.simplefilter("ignore")
                xgb_collective.finalize()
        if self.tracker is not None:
            with contextlib.suppress(Exception):
                self.tracker.free()
            self.tracker = None
        self.formed = None
