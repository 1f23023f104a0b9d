"""mmdetection's AnchorGenerator for the FPN RPN: strides 4..64, scale 8, ratios 0.5/1/2."""
import torch

STRIDES = (4, 8, 16, 32, 64)
RATIOS = (0.5, 1.0, 2.0)
SCALES = (8.0,)


def base_anchors(stride, device=None):
    """(A, 4) anchors centred on (0, 0): ratio-major, h = sqrt(r), w = 1 / sqrt(r), not rounded."""
    ratios = torch.tensor(RATIOS, device=device)
    scales = torch.tensor(SCALES, device=device)
    h_ratios = torch.sqrt(ratios)
    w_ratios = 1 / h_ratios
    ws = (stride * w_ratios[:, None] * scales[None, :]).view(-1)
    hs = (stride * h_ratios[:, None] * scales[None, :]).view(-1)
    return torch.stack([-0.5 * ws, -0.5 * hs, 0.5 * ws, 0.5 * hs], dim=-1)


def grid_anchors(feat_h, feat_w, stride, device=None):
    """(H * W * A, 4) anchors, location-major, anchor index fastest (matches head outputs)."""
    shift_x = torch.arange(0, feat_w, device=device).to(torch.float32) * stride
    shift_y = torch.arange(0, feat_h, device=device).to(torch.float32) * stride
    yy, xx = torch.meshgrid(shift_y, shift_x, indexing='ij')
    xx, yy = xx.reshape(-1), yy.reshape(-1)
    shifts = torch.stack([xx, yy, xx, yy], dim=-1)
    return (base_anchors(stride, device)[None, :, :] + shifts[:, None, :]).view(-1, 4)
