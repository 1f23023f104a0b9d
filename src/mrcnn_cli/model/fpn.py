"""Feature pyramid (mmdetection's FPN with num_outs=5, no extra convs)."""
from torch import nn
from torch.nn import functional as F

from mrcnn_cli.model.layers import Conv


class FPN(nn.Module):
    """P2..P6 from C2..C5; P6 = max-pool (kernel 1, stride 2) of P5."""

    def __init__(self, in_channels=(256, 512, 1024, 2048), out_channels=256):
        super().__init__()
        self.lateral_convs = nn.ModuleList(Conv(c, out_channels, 1) for c in in_channels)
        self.fpn_convs = nn.ModuleList(Conv(out_channels, out_channels, 3, padding=1) for _ in in_channels)

    def forward(self, feats):
        laterals = [conv(f) for conv, f in zip(self.lateral_convs, feats)]
        for i in range(len(laterals) - 1, 0, -1):   # in place: a fresh conv output (one P2 less)
            laterals[i - 1] += upsample_to(laterals[i], laterals[i - 1].shape[2:])
        outs = [conv(lat) for conv, lat in zip(self.fpn_convs, laterals)]
        outs.append(F.max_pool2d(outs[-1], 1, stride=2))
        return outs


def upsample_to(x, size):
    """Nearest upsampling of `x` to `size` (mmdetection's `F.interpolate(size=...)`).

    On inputs padded to a multiple of 32 every level is exactly twice the next; a constant
    scale of 2 gives the same pixels and exports as a Resize with constant scales, which
    onnxruntime keeps in its blocked (NCHWc) layout and fuses with the lateral conv's sum."""
    if size[0] == 2 * x.shape[2] and size[1] == 2 * x.shape[3]:
        return F.interpolate(x, scale_factor=2.0, mode='nearest')
    return F.interpolate(x, size=size, mode='nearest')
