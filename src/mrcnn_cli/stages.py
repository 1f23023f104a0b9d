"""Optional per-stage timing of the model, for `mrcnn bench` (a no-op unless a timer is attached)."""
import contextlib
import time
from collections import defaultdict

import torch


class StageTimer:
    """Accumulates wall time per named stage; synchronises CUDA so GPU time lands in its stage."""

    def __init__(self, device):
        self.cuda = torch.device(device).type == 'cuda'
        self.totals = defaultdict(float)

    def _sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    @contextlib.contextmanager
    def __call__(self, name):
        self._sync()
        start = time.perf_counter()
        try:
            yield
        finally:
            self._sync()
            self.totals[name] += time.perf_counter() - start

    def reset(self):
        self.totals = defaultdict(float)


_timer = None


def stage(name):
    return _timer(name) if _timer is not None else contextlib.nullcontext()


@contextlib.contextmanager
def timing(timer):
    global _timer
    previous, _timer = _timer, timer
    try:
        yield timer
    finally:
        _timer = previous
