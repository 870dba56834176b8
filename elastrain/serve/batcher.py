"""Dynamic batching: requests that arrive close together are scored in one call of the model."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np


@dataclass
class _Pending:
    features: np.ndarray   # (n, F)
    done: asyncio.Future


class DynamicBatcher:
    """Scores (n, F) float32 feature blocks by stacking the blocks waiting at once into one call
    of `score` (N, F) -> (N, K), run in one background thread: a batch closes when it holds
    `max_batch` rows or `max_wait_ms` after its first block arrived, whichever comes first (a
    block larger than `max_batch` rows goes alone). The idea is Triton's dynamic batcher
    (NVIDIA Triton Inference Server docs, "Dynamic Batcher").

    Args:
        on_batch: told each batch's size in rows (the batch size histogram).
    """

    def __init__(self, score: Callable[[np.ndarray], np.ndarray], max_batch: int = 64, max_wait_ms: float = 5.0,
                 on_batch: Callable[[int], None] | None = None) -> None:
        self.score = score
        self.max_batch = max_batch
        self.max_wait_s = max_wait_ms / 1000
        self.on_batch = on_batch or (lambda _: None)
        self._queue: asyncio.Queue[_Pending] = asyncio.Queue()
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="elastrain-score")
        self._task: asyncio.Task | None = None
        self._carry: _Pending | None = None   # a block that did not fit the last batch: it opens the next

    def start(self) -> None:
        """Start collecting batches (in the running event loop)."""
        self._task = asyncio.get_running_loop().create_task(self._collect())

    async def stop(self) -> None:
        """Stop collecting; pending requests fail."""
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._executor.shutdown(wait=False, cancel_futures=True)

    async def submit(self, features: np.ndarray) -> np.ndarray:
        """The scores (n, K) of `features` (n, F), scored in a batch with the blocks beside it.

        Raises:
            Exception: whatever the model raised for the batch it was in.
        """
        pending = _Pending(features, asyncio.get_running_loop().create_future())
        await self._queue.put(pending)
        return await pending.done

    async def _collect(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = [self._carry or await self._queue.get()]
            self._carry = None
            rows = len(batch[0].features)
            deadline = time.monotonic() + self.max_wait_s
            while rows < self.max_batch:
                try:
                    more = self._queue.get_nowait()
                except asyncio.QueueEmpty:
                    left = deadline - time.monotonic()
                    if left <= 0:
                        break
                    try:
                        more = await asyncio.wait_for(self._queue.get(), left)
                    except TimeoutError:
                        break
                if rows + len(more.features) > self.max_batch:
                    self._carry = more
                    break
                batch.append(more)
                rows += len(more.features)
            await self._run(loop, batch, rows)

    async def _run(self, loop: asyncio.AbstractEventLoop, batch: list[_Pending], rows: int) -> None:
        self.on_batch(rows)
        stacked = batch[0].features if len(batch) == 1 else np.concatenate([p.features for p in batch])
        try:
            scores = await loop.run_in_executor(self._executor, self.score, stacked)
        except Exception as exc:   # handed to each caller of the batch
            for pending in batch:
                if not pending.done.done():
                    pending.done.set_exception(exc)
            return
        start = 0
        for pending in batch:
            end = start + len(pending.features)
            if not pending.done.done():
                pending.done.set_result(scores[start:end])
            start = end
