"""Per-stage timing for `mrcnn bench`: a StageTimer is passed down the call as `stage`."""
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


def no_stage(name):
    """The `stage` of an untimed call."""
    return contextlib.nullcontext()
