"""What the traces say one application does: seconds per step where it runs, progress per step
at a batch size, and when it is done (the semantics of the repository's `traces/README.md`).

This is the simulator's ground truth. Policies never read it: they see only what a running job
would report (step times it has shown, gradient noise at its batch size).
"""

from __future__ import annotations

import bisect

import numpy as np

from elastrain.scheduler.efficiency import GradientNoise, gain
from elastrain.sim.traces import MAX_LOCAL_BATCH, AppTrace


class AppModel:
    """Step times, gradient noise and completion of one application, from its trace."""

    def __init__(self, trace: AppTrace) -> None:
        self.name = trace.name
        self.initial_batch = trace.min_batch_size
        self.max_batch = trace.max_batch_size
        self._placements = _tables(trace.placements, ["placement"])
        self._scaled = _tables(trace.scalability, ["num_nodes", "num_replicas"])
        self._scaled_nodes = sorted({nodes for nodes, _ in self._scaled})
        measured = trace.placements["local_bsz"]
        self.min_local = int(measured.min())
        self.max_local = int(min(measured.max(), MAX_LOCAL_BATCH.get(trace.name, measured.max())))
        self._batches = sorted(trace.validation)
        self._runs = [trace.validation[b] for b in self._batches]
        first = trace.validation[self.initial_batch]
        # Done after max_epochs - 1 epochs of progress (README).
        self.target = float(first["progress"].iloc[trace.max_epochs - 2])

    def micro_step_time(self, counts: tuple[int, ...], local_batch: float) -> float:
        """Seconds of one step with `counts[i]` workers on node i, `local_batch` samples each."""
        used = tuple(sorted(c for c in counts if c > 0))
        key = "".join(str(c) for c in used)
        if len(used) <= 4 and all(c <= 9 for c in used):
            for candidate in (key, key[::-1]):
                if candidate in self._placements:
                    return _interp(self._placements[candidate], local_batch)
        return self._scaled_time(len(used), sum(used), local_batch)

    def compute_time(self, local_batch: float) -> float:
        """Seconds of the forward and backward pass alone (one extra accumulation micro-step)."""
        table = self._placements["1"]
        return float(np.interp(local_batch, table[0], table[1] - table[2]))

    def step(self, counts: tuple[int, ...], batch: int) -> tuple[float, float, int]:
        """(seconds per optimizer step, per-worker micro-batch, accumulation micro-steps) for a
        global `batch` over `counts`."""
        workers = sum(counts)
        local = batch / workers
        accumulation = max(int(np.ceil(local / self.max_local - 1e-9)) - 1, 0)
        micro = local / (accumulation + 1)
        seconds = self.micro_step_time(counts, micro) + accumulation * self.compute_time(micro)
        return seconds, micro, accumulation

    def noise(self, progress: float, batch: int) -> GradientNoise:
        """Gradient noise (normalised to the initial batch) after `progress`, as measured by the
        validation run whose batch size is nearest (geometrically) to `batch`."""
        i = min(range(len(self._batches)), key=lambda j: abs(np.log(self._batches[j] / batch)))
        run = self._runs[i]
        sqr = float(np.interp(progress, run["progress"], run["grad_sqr"]))
        var = float(np.interp(progress, run["progress"], run["grad_var"]))
        return GradientNoise(sqr, var)

    def progress_per_step(self, progress: float, batch: int) -> float:
        """Progress (initial-batch steps) one step at global `batch` makes after `progress`."""
        return float(gain(self.noise(progress, batch), batch / self.initial_batch))

    def _scaled_time(self, nodes: int, workers: int, local_batch: float) -> float:
        """Step time of a placement over more nodes than single-node runs cover, from the
        multi-node runs with the nearest node count at or above `nodes`, interpolated in workers."""
        at = bisect.bisect_left(self._scaled_nodes, nodes)
        measured_nodes = self._scaled_nodes[min(at, len(self._scaled_nodes) - 1)]
        rows = sorted(r for n, r in self._scaled if n == measured_nodes)
        times = [_interp(self._scaled[(measured_nodes, r)], local_batch) for r in rows]
        return float(np.interp(workers, rows, times))


def _tables(frame, keys: list[str]) -> dict:
    """key -> (local batch sizes, step times, sync times), sorted by local batch."""
    tables = {}
    for key, group in frame.groupby(keys):
        group = group.sort_values("local_bsz")
        name = key[0] if len(keys) == 1 else tuple(int(k) for k in key)
        tables[name] = (group["local_bsz"].to_numpy(float), group["step_time"].to_numpy(float),
                        group["sync_time"].to_numpy(float))
    return tables


def _interp(table: tuple[np.ndarray, np.ndarray, np.ndarray], local_batch: float) -> float:
    return float(np.interp(local_batch, table[0], table[1]))
