"""RoI box and mask heads with mmdetection's test-time selection."""
import contextlib
from typing import NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from mrcnn_cli.model.layers import Conv, no_stage
from mrcnn_cli.model.poolers import multilevel_roi_align, regroup, roi_feature_maps, to_rois, ungroup
from mrcnn_cli.ops.boxes import batched_nms, decode_boxes
from mrcnn_cli.ops.tracing import exporting

BOX_STDS = (0.1, 0.1, 0.2, 0.2)
SCORE_THR = 0.05
NMS_IOU = 0.5
MAX_PER_IMG = 100


class BoxDetections(NamedTuple):
    """One image's detections in resized-image pixels, by decreasing score."""
    boxes: torch.Tensor    # (N, 4) x1, y1, x2, y2
    scores: torch.Tensor   # (N,)
    labels: torch.Tensor   # (N,) 0-based


class NetworkOutput(NamedTuple):
    """What the network gives for one image: BoxDetections plus each one's 28x28 mask probabilities."""
    boxes: torch.Tensor
    scores: torch.Tensor
    labels: torch.Tensor
    mask_probs: torch.Tensor   # (N, 28, 28) FP32, of each detection's own class


class BBoxHead(nn.Module):
    """Shared2FC head: two 1024-d FCs, then classes (background LAST) and class-specific deltas."""

    def __init__(self, num_classes=80, in_channels=256, roi_size=7, fc_channels=1024):
        super().__init__()
        self.num_classes = num_classes
        self.roi_size = roi_size
        self.shared_fcs = nn.ModuleList([nn.Linear(in_channels * roi_size * roi_size, fc_channels),
                                         nn.Linear(fc_channels, fc_channels)])
        self.fc_cls = nn.Linear(fc_channels, num_classes + 1)
        self.fc_reg = nn.Linear(fc_channels, num_classes * 4)
        self.channels_last_input = False

    def expect_channels_last(self):
        """Reorder the first FC's inputs from (C, 7, 7) to (7, 7, C) once, so that a channels-last
        RoI feature map flattens as a view instead of a copy of every RoI's features."""
        fc, s = self.shared_fcs[0], self.roi_size
        fc.weight.data = fc.weight.data.view(fc.out_features, -1, s, s).permute(0, 2, 3, 1).reshape(fc.weight.shape)
        self.channels_last_input = True

    def forward(self, x):
        fc1, s = self.shared_fcs[0], self.roi_size
        if not self.channels_last_input:
            x = fc1(x.flatten(1))
        elif not exporting():   # a permuted flatten is a view of channels-last memory
            x = fc1(x.permute(0, 2, 3, 1).flatten(1))
        else:   # NCHW RoIAlign output: put the weight back in (C, 7, 7) order, folded to a constant
            weight = fc1.weight.view(fc1.out_features, s, s, -1).permute(0, 3, 1, 2).reshape(fc1.weight.shape)
            x = F.linear(x.flatten(1), weight, fc1.bias)
        x = F.relu(x, inplace=True)
        for fc in self.shared_fcs[1:]:
            x = F.relu(fc(x), inplace=True)
        return self.fc_cls(x), self.fc_reg(x)


class MaskHead(nn.Module):
    """FCN mask head: four 3x3 convs, a 2x deconv, 1x1 logits per class (28 x 28)."""

    def __init__(self, num_classes=80, channels=256):
        super().__init__()
        self.convs = nn.ModuleList(Conv(channels, channels, 3, padding=1, relu=True) for _ in range(4))
        self.upsample = nn.ConvTranspose2d(channels, channels, 2, stride=2)
        self.conv_logits = nn.Conv2d(channels, num_classes, 1)

    def forward(self, x):
        for conv in self.convs:
            x = conv(x)
        return self.conv_logits(F.relu(self.upsample(x), inplace=True))


def select_detections(rois, cls_logits, deltas, img_shape, num_classes):
    """mmdetection's multiclass_nms for one image: softmax, decode, score > thr, per-class NMS, top 100.

    Boxes stay in resized-image coordinates (mmdet rescales them later with the masks).
    """
    scores = F.softmax(cls_logits, dim=-1)[:, :-1]
    boxes = decode_boxes(rois, deltas, BOX_STDS, img_shape).view(-1, num_classes, 4)
    labels = torch.arange(num_classes, device=scores.device).view(1, -1).expand_as(scores)
    boxes, scores, labels = boxes.reshape(-1, 4), scores.reshape(-1), labels.reshape(-1)
    inds = (scores > SCORE_THR).nonzero().squeeze(1)
    boxes, scores, labels = boxes[inds], scores[inds], labels[inds]
    keep = batched_nms(boxes, scores, labels, NMS_IOU)[:MAX_PER_IMG]
    return BoxDetections(boxes[keep], scores[keep], labels[keep])


class RoIHeads(nn.Module):
    def __init__(self, num_classes=80):
        super().__init__()
        self.bbox_head = BBoxHead(num_classes)
        self.mask_head = MaskHead(num_classes)

    def forward(self, feats, proposals, img_shapes, amp=contextlib.nullcontext, stage=no_stage):
        """One NetworkOutput per image.  `amp` makes the autocast context for the heads (selection
        and NMS run in FP32); `stage(name)` makes a timing context per stage."""
        with stage('roi box head'):
            maps = roi_feature_maps(feats)
            rois = to_rois(proposals)
            pooled = multilevel_roi_align(maps, rois, 7)
            with amp():
                cls_logits, deltas = self.bbox_head(pooled.features)
            cls_logits, deltas = ungroup(cls_logits.float(), pooled.order), ungroup(deltas.float(), pooled.order)
            dets = [select_detections(r[:, 1:], c, d, shape, self.bbox_head.num_classes)
                    for r, c, d, shape in zip(*(split_per_image(t, proposals) for t in (rois, cls_logits, deltas)),
                                              img_shapes)]
        with stage('mask head'):
            probs = self._mask_probs(maps, dets, amp)
        return [NetworkOutput(*d, p) for d, p in zip(dets, split_per_image(probs, [d.boxes for d in dets]))]

    def _mask_probs(self, maps, dets, amp):
        mask_rois = to_rois([d.boxes for d in dets])
        if not (exporting() or mask_rois.shape[0]):
            return mask_rois.new_zeros(0, 28, 28, dtype=torch.float32)
        pooled = multilevel_roi_align(maps, mask_rois, 14)
        with amp():
            logits = self.mask_head(pooled.features)
        labels = regroup(torch.cat([d.labels for d in dets]), pooled.order)
        own_class = logits[torch.arange(logits.shape[0], device=logits.device), labels]
        return ungroup(own_class.float().sigmoid(), pooled.order)


def split_per_image(t, per_image):
    """Split rows of `t` by the row counts of `per_image` (one image: no split, so that an
    exported graph keeps its dynamic row count)."""
    if len(per_image) == 1:
        return [t]
    return t.split([p.shape[0] for p in per_image])
