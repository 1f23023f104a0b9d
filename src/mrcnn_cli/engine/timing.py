"""Per-stage timing for `mrcnn bench`: a StageTimer is passed down the call as `stage`."""
import contextlib
import time
from collections import defaultdict

import torch

from mrcnn_cli.model.layers import no_stage  # noqa: F401 - the untimed stage, here beside the timed one


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

