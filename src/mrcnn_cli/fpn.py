"""Feature pyramid (mmdetection's FPN with num_outs=5, no extra convs)."""
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


class FPN(nn.Module):
    """P2..P6 from C2..C5; P6 = max-pool (kernel 1, stride 2) of P5."""

    def __init__(self, in_channels=(256, 512, 1024, 2048), out_channels=256):
        super().__init__()
        self.lateral_convs = nn.ModuleList(Conv(c, out_channels, 1) for c in in_channels)
        self.fpn_convs = nn.ModuleList(Conv(out_channels, out_channels, 3, padding=1) for _ in in_channels)

    def forward(self, feats):
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, feats)]
        for i in range(len(laterals) - 1, 0, -1):   # in place: a fresh conv output (one P2 less)
            laterals[i - 1] += F.interpolate(laterals[i], size=laterals[i - 1].shape[2:], mode='nearest')
        outs = [conv(lat) for conv, lat in zip(self.fpn_convs, laterals)]
        outs.append(F.max_pool2d(outs[-1], 1, stride=2))
        return outs
