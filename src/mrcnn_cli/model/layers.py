"""Small building blocks shared by the FPN and the heads, and the untimed `stage` of a forward."""
import contextlib

from torch import nn
from torch.nn import functional as F


class Conv(nn.Module):
    """A conv held as `.conv`, mirroring mmcv's ConvModule parameter names; optional ReLU."""

    def __init__(self, cin, cout, kernel, padding=0, relu=False):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, padding=padding)
        self.relu = relu

    def forward(self, x):
        x = self.conv(x)
        return F.relu(x, inplace=True) if self.relu else x  # x is the conv's fresh output


def no_stage(name):
    """The `stage` of an untimed call (a timed one passes engine.timing.StageTimer)."""
    return contextlib.nullcontext()
