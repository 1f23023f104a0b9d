"""mmcv's RoIAlign (aligned=True, sampling_ratio=0, average pooling) as one weighted gather on
channels-last features: the CPU path of the RoI heads.

torchvision's CPU kernel computes the same thing one channel at a time on NCHW features; the
features here are channels-last (the layout the convolutions run in), where each sample point is
a contiguous row of C values.  Bilinear weights are separable, so a bin's weight on feature pixel
(r, c) is Wy[r] * Wx[c] / count, with Wy and Wx the bin's interpolation weights summed over its
samples along each axis.  Each bin is then one bag of `F.embedding_bag(mode='sum')`, which adds
weighted rows in vectorised, threaded code.  Same function as torchvision.ops.roi_align up to
float summation order (tested against it).
"""
import torch
from torch.nn import functional as F

ROIS_PER_CHUNK = 256   # bounds the (rois, bins, rows, cols) index temporaries to ~25 MB


def axis_weights(start, length, pooled, limit):
    """One axis of mmcv's sampling, for each roi (N,) and output bin: the first feature row the bin
    touches (N, pooled), its summed bilinear weights on the L rows from there (N, pooled, L), and
    the roi's samples per bin along this axis (N,).

    A bin has grid = ceil(length / pooled) samples, sample i at start + p * bin + (i + .5) * bin / grid;
    samples outside [-1, limit] weigh nothing, coordinates clamp at 0 and at limit - 1."""
    n = start.shape[0]
    grid = torch.ceil(length / pooled).long()
    bin_size = length / pooled
    g = max(int(grid.max()), 1)
    p = torch.arange(pooled, dtype=start.dtype, device=start.device).view(1, -1, 1)
    i = torch.arange(g, dtype=start.dtype, device=start.device).view(1, 1, -1)
    pos = (start.view(-1, 1, 1) + p * bin_size.view(-1, 1, 1)
           + (i + 0.5) * bin_size.view(-1, 1, 1) / grid.clamp(min=1).to(start.dtype).view(-1, 1, 1))
    valid = (i < grid.view(-1, 1, 1)) & (pos >= -1.0) & (pos <= limit)
    pos = pos.clamp(min=0)
    low = pos.floor().clamp(max=limit - 1)
    frac = torch.where(pos >= limit - 1, 0.0, pos - low)
    low = low.long()
    high = (low + 1).clamp(max=limit - 1)
    first = torch.where(valid, low, limit).amin(dim=2).clamp(max=limit - 1)         # (N, pooled)
    span = int((torch.where(valid, high, 0) - first.unsqueeze(2)).max().clamp(min=0)) + 1
    weights = pos.new_zeros(n, pooled, span)
    weights.scatter_add_(2, (low - first.unsqueeze(2)).clamp(0, span - 1), torch.where(valid, 1 - frac, 0.0))
    weights.scatter_add_(2, (high - first.unsqueeze(2)).clamp(0, span - 1), torch.where(valid, frac, 0.0))
    return first, weights, grid


def roi_align_nhwc(feat, rois, output_size, scale):
    """RoIAlign of (K, 5) rois (batch index, x1, y1, x2, y2) on `feat` (B, C, H, W), best
    channels-last.  Returns (K, output_size, output_size, C), in `feat`'s dtype."""
    b, c, h, w = feat.shape
    table = feat.permute(0, 2, 3, 1).reshape(b * h * w, c)   # a view when feat is channels-last
    if not rois.shape[0]:
        return feat.new_zeros(0, output_size, output_size, c)
    outs = [_gather_chunk(table, chunk, output_size, scale, h, w)
            for chunk in rois.float().split(ROIS_PER_CHUNK)]
    return torch.cat(outs) if len(outs) > 1 else outs[0]


def _gather_chunk(table, rois, pooled, scale, h, w):
    n = rois.shape[0]
    x1, y1, x2, y2 = (rois[:, k] * scale - 0.5 for k in range(1, 5))   # aligned: pixel centres
    first_y, wy, grid_y = axis_weights(y1, y2 - y1, pooled, h)
    first_x, wx, grid_x = axis_weights(x1, x2 - x1, pooled, w)
    count = (grid_y * grid_x).clamp(min=1).to(wy.dtype).view(-1, 1, 1, 1, 1)   # as mmcv: max(gh * gw, 1)
    rows = first_y.view(n, pooled, 1, 1, 1) + torch.arange(wy.shape[2], device=rois.device).view(-1, 1)
    cols = first_x.view(n, 1, pooled, 1, 1) + torch.arange(wx.shape[2], device=rois.device)
    index = (rois[:, 0].long().view(-1, 1, 1, 1, 1) * h + rows) * w + cols        # (N, P, P, Ly, Lx)
    weight = wy.view(n, pooled, 1, -1, 1) * wx.view(n, 1, pooled, 1, -1) / count
    index, weight = index.reshape(n * pooled * pooled, -1), weight.reshape(n * pooled * pooled, -1)
    keep = weight != 0
    offsets = index.new_zeros(n * pooled * pooled + 1)
    torch.cumsum(keep.sum(1), 0, out=offsets[1:])
    out = F.embedding_bag(index[keep], table, offsets, mode='sum',
                          per_sample_weights=weight[keep].to(table.dtype), include_last_offset=True)
    return out.view(n, pooled, pooled, -1)
