"""Region proposal network: head and mmdetection's test-time proposal selection."""
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from mrcnn_cli.ops.anchors import RATIOS, SCALES, STRIDES, grid_anchors
from mrcnn_cli.ops.boxes import batched_nms, box_wh, decode_boxes, top_scores

NMS_PRE = 1000       # top proposals kept per level before NMS
MAX_PER_IMG = 1000   # proposals kept after NMS
NMS_IOU = 0.7


class RPNLevelOutput(NamedTuple):
    objectness: torch.Tensor   # (B, A, H, W) logits
    deltas: torch.Tensor       # (B, 4A, H, W)


class RPNHead(nn.Module):
    def __init__(self, channels=256, num_anchors=len(RATIOS) * len(SCALES)):
        super().__init__()
        self.rpn_conv = nn.Conv2d(channels, channels, 3, padding=1)
        self.rpn_cls = nn.Conv2d(channels, num_anchors, 1)
        self.rpn_reg = nn.Conv2d(channels, num_anchors * 4, 1)

    def forward(self, feats):
        """One RPNLevelOutput per pyramid level."""
        outs = []
        for x in feats:
            x = F.relu(self.rpn_conv(x), inplace=True)
            outs.append(RPNLevelOutput(self.rpn_cls(x), self.rpn_reg(x)))
        return outs


def select_proposals(head_outs, img_index, img_shape):
    """(K, 4) proposals of one image of the batch, by decreasing score, mmdetection 3.x semantics.

    Per level: sigmoid scores, top NMS_PRE by an (unstable, as mmdet) descending sort; decode
    with stds 1 clipped to the unpadded image; drop empty boxes; NMS per level; global top.
    """
    scores_all, deltas_all, anchors_all, levels = [], [], [], []
    for level, ((cls, reg), stride) in enumerate(zip(head_outs, STRIDES)):
        cls, reg = cls[img_index], reg[img_index]
        scores = cls.permute(1, 2, 0).reshape(-1).sigmoid()
        deltas = reg.permute(1, 2, 0).reshape(-1, 4)
        anchors = grid_anchors(cls.shape[1], cls.shape[2], stride, cls.device)
        scores, order = top_scores(scores, NMS_PRE)
        deltas, anchors = deltas[order], anchors[order]
        scores_all.append(scores)
        deltas_all.append(deltas)
        anchors_all.append(anchors)
        levels.append(torch.full_like(scores, level, dtype=torch.long))
    scores = torch.cat(scores_all)
    levels = torch.cat(levels)
    boxes = decode_boxes(torch.cat(anchors_all), torch.cat(deltas_all), (1.0, 1.0, 1.0, 1.0), img_shape)
    w, h = box_wh(boxes)
    valid = (w > 0) & (h > 0)
    boxes, scores, levels = boxes[valid], scores[valid], levels[valid]
    keep = batched_nms(boxes, scores, levels, NMS_IOU)[:MAX_PER_IMG]
    return boxes[keep]   # the RoI heads take the boxes only (as mmdetection's)
