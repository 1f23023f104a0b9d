"""Multi-level RoIAlign: mmdetection's level mapping and the three ways the features are sampled.

One function, three paths, chosen once per image from where the model runs:
- `gather` (CPU): `roi_align_nhwc`'s weighted gather on channels-last maps, rois grouped by level;
- `stacked` (GPU): all levels in one torchvision RoIAlign call on a level-stacked copy, in roi
  order and without a host sync;
- `per_level` (ONNX export): torchvision's RoIAlign (exported as ONNX RoiAlign) per level.
"""
from typing import NamedTuple

import torch
from torch.nn import functional as F

from mrcnn_cli.ops.kernels import roi_align
from mrcnn_cli.ops.roi_align import roi_align_nhwc
from mrcnn_cli.ops.tracing import exporting

ROI_STRIDES = (4, 8, 16, 32)   # P2..P5 feed the RoI heads
FINEST_SCALE = 56
GATHER, STACKED, PER_LEVEL = 'gather', 'stacked', 'per_level'


class RoIFeatureMaps(NamedTuple):
    """P2..P5 in the form their path samples: four channels-last maps in the network's dtype
    (gather), one stacked FP32 tensor (stacked), four NCHW FP32 maps (per_level).  The GPU and
    the export sample in FP32, as torchvision's autocast rule for RoIAlign does; the CPU gather
    samples BF16 maps as they are, adding in FP32 and rounding once to the BF16 the heads read
    (converting the maps to FP32 first cost more than the whole gather)."""
    path: str
    maps: object


class PooledFeatures(NamedTuple):
    """RoIAlign's (K, C, S, S) output; row i belongs to rois[order[i]] (or rois[i] when order
    is None).  Grouped rows are channels-last in memory on the gather path."""
    features: torch.Tensor
    order: torch.Tensor | None = None


def sampling_path(feat):
    if exporting():
        return PER_LEVEL
    return GATHER if feat.device.type == 'cpu' else STACKED


def roi_feature_maps(feats):
    """Convert the FPN's maps once for both heads (layout first: BF16/FP16 moves half the bytes)."""
    feats = feats[:len(ROI_STRIDES)]
    path = sampling_path(feats[0])
    if path == GATHER:
        return RoIFeatureMaps(path, [f.contiguous(memory_format=torch.channels_last) for f in feats])
    if path == PER_LEVEL:
        return RoIFeatureMaps(path, [f.contiguous().to(torch.float32) for f in feats])
    return RoIFeatureMaps(path, stack_levels(feats))


def map_roi_levels(rois, num_levels):
    """Pyramid level of each roi: floor(log2(sqrt(w * h) / 56 + 1e-6)), clamped."""
    scale = torch.sqrt((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2]))
    levels = torch.floor(torch.log2(scale / FINEST_SCALE + 1e-6))
    return levels.clamp(min=0, max=num_levels - 1).long()


def multilevel_roi_align(maps, rois, output_size):
    """RoIAlign (aligned=True, sampling_ratio=0) of each (batch_idx, x1, y1, x2, y2) roi on its level."""
    levels = map_roi_levels(rois, len(ROI_STRIDES))
    if maps.path == STACKED:
        return PooledFeatures(stacked_roi_align(maps.maps, rois, levels, output_size))
    feats = maps.maps
    outs, order = [], []
    for level, stride in enumerate(ROI_STRIDES):
        inds = (levels == level).nonzero().squeeze(1)
        if not (maps.path == PER_LEVEL or inds.numel()):
            continue
        # top to bottom: consecutive rois then read the same rows of the map, which keeps them in
        # cache (ONNX Runtime's RoiAlign gains most; docs/performance.md)
        inds = inds[rois[inds, 2].argsort()]
        if maps.path == GATHER:
            outs.append(roi_align_nhwc(feats[level], rois[inds], output_size, 1.0 / stride))
        else:
            outs.append(roi_align(feats[level], rois[inds], output_size, 1.0 / stride,
                                  sampling_ratio=0, aligned=True))
        order.append(inds)
    if not outs:   # no rois at all
        return PooledFeatures(feats[0].new_zeros(0, feats[0].shape[1], output_size, output_size))
    out, order = (outs[0], order[0]) if len(outs) == 1 else (torch.cat(outs), torch.cat(order))
    return PooledFeatures(out.permute(0, 3, 1, 2) if maps.path == GATHER else out, order)


def stack_levels(feats):
    """P2..P5 of B images as one (B * 4, C, H2, W2) FP32 tensor, level l of image b at b * 4 + l.

    Coarser levels are padded by repeating their last row and column: RoIAlign clamps samples
    past the last pixel to it, and rois clipped to the image never sample beyond one pixel
    past it, so every sample reads what it reads on the level's own map."""
    h, w = feats[0].shape[-2:]
    return torch.stack([F.pad(f.float(), (0, w - f.shape[-1], 0, h - f.shape[-2]), mode='replicate')
                        for f in feats], dim=1).flatten(0, 1)


def stacked_roi_align(stacked, rois, levels, output_size):
    """All levels in one torchvision RoIAlign call, with no host sync (no per-level split): each
    roi points at its level's slot and is given in that level's pixels.  Strides are powers of
    two, so dividing by them is exact and the samples are those of `roi_align(..., 1 / stride)`."""
    strides = rois.new_tensor(ROI_STRIDES)[levels]
    slots = rois[:, :1] * len(ROI_STRIDES) + levels[:, None].to(rois)
    scaled = torch.cat([slots, rois[:, 1:] / strides[:, None]], dim=1)
    return roi_align(stacked, scaled, output_size, 1.0, sampling_ratio=0, aligned=True)


def ungroup(t, order):
    """Rows of `t` computed in `multilevel_roi_align`'s order, put back in roi order."""
    if order is None:
        return t
    out = torch.empty_like(t)
    out[order] = t
    return out


def regroup(t, order):
    """Rows of `t` in roi order, taken in `multilevel_roi_align`'s order (the inverse of ungroup)."""
    return t if order is None else t[order]


def to_rois(boxes_per_image):
    """Concatenate per-image boxes into (K, 5) rois with the batch index first."""
    return torch.cat([torch.cat([b.new_full((b.shape[0], 1), i), b], dim=1)
                      for i, b in enumerate(boxes_per_image)])
