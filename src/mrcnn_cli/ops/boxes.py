"""Box math with mmdetection 3.x / mmcv semantics (plain functions, tensors in and out)."""
import math

import torch

from mrcnn_cli.ops.kernels import nms
from mrcnn_cli.ops.tracing import exporting

# DeltaXYWHBBoxCoder's default clamp on dw, dh: |log(16 / 1000)|.
MAX_WH_RATIO = abs(math.log(16 / 1000))
# mmcv's batched_nms switches to a per-class loop at this many boxes.
NMS_SPLIT_THRESHOLD = 10000


def decode_boxes(rois, deltas, stds, max_shape):
    """Apply (dx, dy, dw, dh) deltas to xyxy boxes (mmdet's delta2bbox, means 0).

    rois: (N, 4); deltas: (N, 4 * C) for C class-specific boxes per roi.
    max_shape: (h, w) of the resized, unpadded image; boxes are clipped to it.
    Returns (N, 4 * C).  Widths are x2 - x1 (no +1), as in mmdetection 2.x+.
    """
    n, c = deltas.shape[0], deltas.shape[1] // 4
    deltas = deltas.reshape(-1, 4) * deltas.new_tensor(stds).view(1, -1)
    rois = rois.repeat(1, c).reshape(-1, 4)
    pxy = (rois[:, :2] + rois[:, 2:]) * 0.5
    pwh = rois[:, 2:] - rois[:, :2]
    gxy = pxy + pwh * deltas[:, :2]
    gwh = pwh * deltas[:, 2:].clamp(min=-MAX_WH_RATIO, max=MAX_WH_RATIO).exp()
    boxes = torch.cat([gxy - gwh * 0.5, gxy + gwh * 0.5], dim=-1)
    if max_shape is not None:
        h, w = max_shape  # ints, or 0-d float tensors in an exported graph
        boxes = torch.stack([boxes[:, 0].clamp(min=0, max=w), boxes[:, 1].clamp(min=0, max=h),
                             boxes[:, 2].clamp(min=0, max=w), boxes[:, 3].clamp(min=0, max=h)], dim=1)
    return boxes.reshape(n, -1)


def top_scores(scores, k):
    """(values, indices) of the k best scores, by decreasing score.

    Eager: mmdet's unstable `sort(descending=True)` then a slice, so ties fall as in mmdet.
    Export: TopK with k = min(k, n) computed in the graph, for any image size.
    """
    if exporting():
        n = torch._shape_as_tensor(scores)[0]
        return scores.topk(torch.clamp(n, max=k))
    if 0 < k < scores.shape[0]:
        values, order = scores.sort(descending=True)
        return values[:k], order[:k]
    return scores, torch.arange(scores.shape[0], device=scores.device)


def nms_sorted_like_mmcv(boxes, scores, iou_threshold):
    """Greedy NMS that visits boxes in the order mmcv's CPU kernel does.

    mmcv sorts with the unstable `scores.sort(descending=True)`; when scores tie (saturated
    sigmoids) that order decides which boxes survive.  torchvision's kernel sorts stably, so
    presorting with mmcv's call and handing it the sorted boxes reproduces mmcv exactly.
    Returns indices into `boxes`, by decreasing score.
    """
    order = scores.sort(descending=True)[1]
    return order[nms(boxes[order], scores[order], iou_threshold)]


def batched_nms(boxes, scores, idxs, iou_threshold):
    """mmcv's batched_nms: NMS within each idx group, by the coordinate-offset trick.

    The offsets are added exactly as mmcv does (they change float rounding of the IoUs),
    and above NMS_SPLIT_THRESHOLD boxes the groups are run one by one as mmcv does.
    Returns keep indices by decreasing score.
    """
    if exporting():
        # no boxes is a valid input here; boxes are clipped to >= 0, so 0 does not change the max
        max_coordinate = torch.cat([boxes.reshape(-1), boxes.new_zeros(1)]).max()
        boxes_for_nms = boxes + (idxs.to(boxes) * (max_coordinate + 1))[:, None]
        return nms(boxes_for_nms, scores, iou_threshold)
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.long, device=boxes.device)
    max_coordinate = boxes.max()
    offsets = idxs.to(boxes) * (max_coordinate + torch.tensor(1).to(boxes))
    boxes_for_nms = boxes + offsets[:, None]
    if boxes.shape[0] >= NMS_SPLIT_THRESHOLD:
        kept = torch.zeros_like(scores, dtype=torch.bool)
        for group in torch.unique(idxs):
            members = (idxs == group).nonzero().view(-1)
            kept[members[nms_sorted_like_mmcv(boxes_for_nms[members], scores[members], iou_threshold)]] = True
        keep = kept.nonzero().view(-1)
        return keep[scores[keep].sort(descending=True)[1]]
    if boxes.is_cuda:   # one parallel kernel; a loop would add a launch and a host sync per group
        return nms_sorted_like_mmcv(boxes_for_nms, scores, iou_threshold)
    # mmcv's one greedy pass over all boxes: a box never suppresses one of another group (the offsets
    # keep the groups apart), so each group alone, visited in the same global order, keeps the same
    # boxes, while the CPU kernel compares each kept box with its own group only
    order = scores.sort(descending=True)[1]
    sorted_idxs = idxs[order]
    kept = torch.zeros_like(scores, dtype=torch.bool)
    for group in torch.unique(sorted_idxs):
        members = (sorted_idxs == group).nonzero().view(-1)
        # scores already descend: the kernel's stable sort keeps this order
        kept[members[nms(boxes_for_nms[order[members]], scores[order[members]], iou_threshold)]] = True
    return order[kept]


def box_wh(boxes):
    return boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
