"""Dynamic batching: requests' prepared images queue (bounded) and one model thread runs them in
groups of up to `max_batch`, waiting at most `max_delay` for a group to fill.  Decoding and
encoding stay on the callers' threads; results are identical to batch 1 (`predict_prepared` only
batches images of equal padded size)."""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any


class QueueFull(Exception):
    """The queue holds `queue_size` requests already: the caller answers 503."""


@dataclass
class _Job:
    prepared: Any
    future: Future
    queued_at: float


class Batcher:
    """`submit(prepared)` -> a Future of its Detections.  `run_batch(list of prepared) -> list of
    Detections` runs on the one model thread; `on_batch(size)` is told each batch's size."""

    def __init__(self, run_batch: Callable[[Sequence[Any]], list[Any]], *, max_batch: int = 4,
                 max_delay: float = 0.005, queue_size: int = 64, on_batch: Callable[[int], None] | None = None):
        self.run_batch, self.max_batch, self.max_delay = run_batch, max_batch, max_delay
        self.on_batch = on_batch or (lambda size: None)
        self.jobs: queue.Queue[_Job | None] = queue.Queue(maxsize=queue_size)
        self.thread = threading.Thread(target=self._loop, name='mrcnn-serve-model', daemon=True)
        self.thread.start()

    def submit(self, prepared: Any) -> Future:
        job = _Job(prepared, Future(), time.perf_counter())
        try:
            self.jobs.put_nowait(job)
        except queue.Full:
            raise QueueFull from None
        return job.future

    @property
    def depth(self) -> int:
        return self.jobs.qsize()

    def close(self) -> None:
        """Finish what is queued, then stop the model thread."""
        self.jobs.put(None)
        self.thread.join()

    def _loop(self) -> None:
        while True:
            first = self.jobs.get()
            if first is None:
                return
            batch, deadline, closing = [first], time.perf_counter() + self.max_delay, False
            while len(batch) < self.max_batch:
                try:
                    job = self.jobs.get(timeout=max(0.0, deadline - time.perf_counter()))
                except queue.Empty:
                    break
                if job is None:
                    closing = True
                    break
                batch.append(job)
            self._run([job for job in batch if job.future.set_running_or_notify_cancel()])   # cancelled: skipped
            first = batch = job = None   # the answers belong to their requests now, not to this idle thread
            if closing:
                return

    def _run(self, batch: list[_Job]) -> None:
        if not batch:
            return
        self.on_batch(len(batch))
        try:
            results = self.run_batch([job.prepared for job in batch])
        except BaseException as e:  # noqa: BLE001 - each waiting request gets the failure
            for job in batch:
                job.future.set_exception(e)
            return
        for job, result in zip(batch, results):
            job.future.set_result(result)
