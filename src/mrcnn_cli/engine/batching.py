"""The one batching engine: jobs queue (bounded) for one model thread, which runs them in groups
of up to `max_batch`, waiting at most `max_delay` seconds for a group to fill, and hands each job
its result through a Future.  `mrcnn serve` submits requests' prepared images to it (QueueFull
beyond the bound: a 503; futures time out and are cancelled by the request); the stream
(engine.pipeline) submits frames from its reader thread and takes the futures back in order.

Results are identical to batch 1: the runner only batches images of equal padded size (see
engine.runner.detections_of), so a group changes how many network calls there are, not what
they give."""
from __future__ import annotations

import contextvars
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Generic, TypeVar

Job = TypeVar('Job')
Result = TypeVar('Result')


class QueueFull(Exception):
    """The queue holds `queue_size` jobs already (a server answers 503)."""


class EngineClosed(Exception):
    """The engine was closed: it takes no more jobs."""


@dataclass
class _Queued(Generic[Job, Result]):
    job: Job
    future: Future[Result]


class BatchEngine(Generic[Job, Result]):
    """`submit(job)` -> a Future of `run_batch([... job ...])`'s entry for it.

    `run_batch(jobs) -> results` (one per job, in order) runs on the engine's one thread, in a copy
    of the context that made the engine.  `max_delay` is how long the first job of a group waits
    for others (None: until the group is full or `flush()` says to run what is queued, as a
    stream's consumer does when it waits).  `on_batch(size)` is told each group's size.  A failing
    group fails each of its futures; a cancelled future's job is skipped, never run."""

    def __init__(self, run_batch: Callable[[Sequence[Job]], Sequence[Result]], *, max_batch: int = 1,
                 max_delay: float | None = 0.0, queue_size: int = 64,
                 on_batch: Callable[[int], object] | None = None, name: str = 'mrcnn-model') -> None:
        if max_batch < 1 or queue_size < 1:
            raise ValueError('max_batch and queue_size must be at least 1')
        self.run_batch, self.max_batch, self.max_delay, self.queue_size = run_batch, max_batch, max_delay, queue_size
        self.on_batch = on_batch
        self._queue: deque[_Queued[Job, Result]] = deque()
        self._cond = threading.Condition()
        self._closing = self._flush = False
        context = contextvars.copy_context()   # how messages name options (errors.option) follows the caller
        self.thread = threading.Thread(target=context.run, args=(self._loop,), name=name, daemon=True)
        self.thread.start()

    @property
    def depth(self) -> int:
        """Jobs waiting (not yet running)."""
        return len(self._queue)

    @property
    def closed(self) -> bool:
        return self._closing

    def submit(self, job: Job, *, block: bool = False) -> Future[Result]:
        """Queue `job`.  A full queue raises QueueFull, or with `block` waits for room; a closed
        engine raises EngineClosed (also to a submitter waiting for room when it closes)."""
        queued: _Queued[Job, Result] = _Queued(job, Future())
        with self._cond:
            while not self._closing and len(self._queue) >= self.queue_size:
                if not block:
                    raise QueueFull
                self._cond.wait()
            if self._closing:
                raise EngineClosed
            self._queue.append(queued)
            self._cond.notify_all()
        return queued.future

    def flush(self) -> None:
        """Run what is queued now, without waiting for the group to fill."""
        with self._cond:
            self._flush = True
            self._cond.notify_all()

    def close(self, *, cancel: bool = False, timeout: float | None = None) -> None:
        """Take no more jobs; run what is queued (or with `cancel`, cancel it), then stop the
        thread, waiting for it at most `timeout` seconds (the group in flight finishes)."""
        with self._cond:
            self._closing = True
            if cancel:
                while self._queue:
                    self._queue.popleft().future.cancel()
            self._cond.notify_all()
        if threading.current_thread() is not self.thread:
            self.thread.join(timeout)

    def __enter__(self) -> BatchEngine[Job, Result]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close(cancel=exc[0] is not None)

    def _next_group(self) -> list[_Queued[Job, Result]] | None:
        """The next group to run (None: closed and drained)."""
        with self._cond:
            while not self._queue:
                if self._closing:
                    return None
                self._cond.wait()
            deadline = None if self.max_delay is None else time.monotonic() + self.max_delay
            while len(self._queue) < self.max_batch and not (self._closing or self._flush):
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    break
                self._cond.wait(remaining)
            group = [self._queue.popleft() for _ in range(min(self.max_batch, len(self._queue)))]
            if not self._queue:   # a flush holds until what was queued when it came has run
                self._flush = False
            self._cond.notify_all()   # room for blocked submitters
        return group

    def _loop(self) -> None:
        while (group := self._next_group()) is not None:
            self._run([q for q in group if q.future.set_running_or_notify_cancel()])   # cancelled: skipped
            del group   # the results belong to their jobs now, not to this idle thread

    def _run(self, group: list[_Queued[Job, Result]]) -> None:
        if not group:
            return
        if self.on_batch is not None:
            self.on_batch(len(group))
        try:
            results = self.run_batch([q.job for q in group])
            if len(results) != len(group):
                raise RuntimeError(f'run_batch gave {len(results)} results for {len(group)} jobs')
        except BaseException as e:  # noqa: BLE001 - each waiting job gets the failure
            for q in group:
                q.future.set_exception(e)
            return
        for q, result in zip(group, results):
            q.future.set_result(result)
