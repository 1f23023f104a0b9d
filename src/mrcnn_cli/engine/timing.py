"""Per-stage timing, the hook `mrcnn bench` times through: a StageTimer is passed down a call as
`stage` (Runner.predict_prepared, stream_sources, PredictOptions.stage), and each stage of the work
runs inside `stage(name)`: 'preprocess', 'network' (or the network's own parts), 'paste'."""
from __future__ import annotations

import contextlib
import threading
import time
from collections import defaultdict
from collections.abc import Iterator

import torch

from mrcnn_cli.model.layers import no_stage  # noqa: F401 - the untimed stage, here beside the timed one


class StageTimer:
    """Accumulates wall time per named stage, from any thread; synchronises CUDA so GPU time lands
    in its stage."""

    def __init__(self, device: str | torch.device = 'cpu') -> None:
        self.cuda = torch.device(device).type == 'cuda'
        self.totals: defaultdict[str, float] = defaultdict(float)
        self._lock = threading.Lock()

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            with self._lock:
                self.totals[name] += time.perf_counter() - start

    @property
    def total(self) -> float:
        """Seconds in every stage together."""
        return sum(self.totals.values())

    def reset(self) -> None:
        with self._lock:
            self.totals = defaultdict(float)
