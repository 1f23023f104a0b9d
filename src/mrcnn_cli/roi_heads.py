"""RoI box and mask heads with mmdetection's multi-level RoIAlign and test-time selection."""
import contextlib

import torch
from torch import nn
from torch.nn import functional as F
from torchvision.ops import roi_align

from mrcnn_cli.boxes import batched_nms, decode_boxes, exporting
from mrcnn_cli.fpn import Conv
from mrcnn_cli.roi_align import roi_align_nhwc
from mrcnn_cli.stages import stage

ROI_STRIDES = (4, 8, 16, 32)   # P2..P5 feed the RoI heads
FINEST_SCALE = 56
BOX_STDS = (0.1, 0.1, 0.2, 0.2)
SCORE_THR = 0.05
NMS_IOU = 0.5
MAX_PER_IMG = 100


def map_roi_levels(rois, num_levels):
    """Pyramid level of each roi: floor(log2(sqrt(w * h) / 56 + 1e-6)), clamped."""
    scale = torch.sqrt((rois[:, 3] - rois[:, 1]) * (rois[:, 4] - rois[:, 2]))
    levels = torch.floor(torch.log2(scale / FINEST_SCALE + 1e-6))
    return levels.clamp(min=0, max=num_levels - 1).long()


def multilevel_roi_align(feats, rois, output_size):
    """RoIAlign (aligned=True, sampling_ratio=0) of each (batch_idx, x1, y1, x2, y2) roi on its level.

    `feats` come from `roi_features`.  Returns the (K, C, S, S) features and `order`: row i
    belongs to rois[order[i]], or to rois[i] when `order` is None.  On the CPU the rows are
    grouped by level (heads run on them and `ungroup` their small outputs, instead of
    scattering 50 MB of features back) and channels-last in memory (from `roi_align_nhwc`); in
    an ONNX export they are grouped by level too; on GPUs all levels are one call, in roi order.
    """
    levels = map_roi_levels(rois, len(ROI_STRIDES))
    if isinstance(feats, torch.Tensor):
        return stacked_roi_align(feats, rois, levels, output_size), None
    gather = uses_gather(feats[0])
    outs, order = [], []
    for level, stride in enumerate(ROI_STRIDES):
        inds = (levels == level).nonzero().squeeze(1)
        if not (exporting() or inds.numel()):
            continue
        # top to bottom: consecutive rois then read the same rows of the map, which keeps them in
        # cache (ONNX Runtime's NCHW RoiAlign on P2: 121 -> 71 ms for 909 proposals)
        inds = inds[rois[inds, 2].argsort()]
        if gather:
            outs.append(roi_align_nhwc(feats[level], rois[inds], output_size, 1.0 / stride))
        else:
            outs.append(roi_align(feats[level], rois[inds], output_size, 1.0 / stride,
                                  sampling_ratio=0, aligned=True))
        order.append(inds)
    if not outs:   # no rois at all
        return feats[0].new_zeros(0, feats[0].shape[1], output_size, output_size), levels
    out, order = (outs[0], order[0]) if len(outs) == 1 else (torch.cat(outs), torch.cat(order))
    return (out.permute(0, 3, 1, 2) if gather else out), order


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


def uses_gather(feat):
    """RoIAlign path: `roi_align_nhwc` on the CPU; torchvision's kernel on GPUs and in ONNX export."""
    return feat.device.type == 'cpu' and not exporting()


def roi_features(feats):
    """P2..P5 in FP32 (RoIAlign samples in FP32, as torchvision's autocast rule does), converted
    once for both heads: channels-last on the CPU for `roi_align_nhwc`, NCHW for torchvision's
    kernel in an export (layout first: BF16/FP16 moves half the bytes), stacked on GPUs."""
    feats = feats[:len(ROI_STRIDES)]
    if uses_gather(feats[0]):
        return [f.contiguous(memory_format=torch.channels_last).to(torch.float32) for f in feats]
    if exporting():
        return [f.contiguous().to(torch.float32) for f in feats]
    return stack_levels(feats)


def to_rois(boxes_per_image):
    """Concatenate per-image boxes into (K, 5) rois with the batch index first."""
    return torch.cat([torch.cat([b.new_full((b.shape[0], 1), i), b], dim=1)
                      for i, b in enumerate(boxes_per_image)])


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
        RoI feature map flattens as a view instead of a 50 MB copy per image."""
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
    Returns boxes (N, 4), scores (N,), labels (N,), in NMS order (decreasing score).
    """
    scores = F.softmax(cls_logits, dim=-1)[:, :-1]
    boxes = decode_boxes(rois, deltas, BOX_STDS, img_shape).view(-1, num_classes, 4)
    labels = torch.arange(num_classes, device=scores.device).view(1, -1).expand_as(scores)
    boxes, scores, labels = boxes.reshape(-1, 4), scores.reshape(-1), labels.reshape(-1)
    inds = (scores > SCORE_THR).nonzero().squeeze(1)
    boxes, scores, labels = boxes[inds], scores[inds], labels[inds]
    keep = batched_nms(boxes, scores, labels, NMS_IOU)[:MAX_PER_IMG]
    return boxes[keep], scores[keep], labels[keep]


class RoIHeads(nn.Module):
    def __init__(self, num_classes=80):
        super().__init__()
        self.bbox_head = BBoxHead(num_classes)
        self.mask_head = MaskHead(num_classes)

    def forward(self, feats, proposals, img_shapes, amp=contextlib.nullcontext):
        """Per image: boxes (resized coords), scores, labels, 28x28 mask probabilities of the label.

        `amp` makes the autocast context for the heads; selection and NMS run in FP32."""
        with stage('roi box head'):
            feats = roi_features(feats)
            rois = to_rois(proposals)
            roi_feats, order = multilevel_roi_align(feats, rois, 7)
            with amp():
                cls_logits, deltas = self.bbox_head(roi_feats)
            cls_logits, deltas = ungroup(cls_logits.float(), order), ungroup(deltas.float(), order)
            dets = [select_detections(r[:, 1:], c, d, shape, self.bbox_head.num_classes)
                    for r, c, d, shape in zip(*(split_per_image(t, proposals) for t in (rois, cls_logits, deltas)),
                                              img_shapes)]
        with stage('mask head'):
            return self._masks(feats, dets, amp)

    def _masks(self, feats, dets, amp):
        mask_rois = to_rois([boxes for boxes, _, _ in dets])
        if exporting() or mask_rois.shape[0]:
            roi_feats, order = multilevel_roi_align(feats, mask_rois, 14)
            with amp():
                logits = self.mask_head(roi_feats)
            labels = torch.cat([lab for _, _, lab in dets])
            labels = labels if order is None else labels[order]
            probs = ungroup(logits[torch.arange(logits.shape[0], device=logits.device), labels].float().sigmoid(), order)
        else:
            probs = feats[0].new_zeros(0, 28, 28, dtype=torch.float32)
        return [(boxes, scores, labels, p)
                for (boxes, scores, labels), p in zip(dets, split_per_image(probs, [d[0] for d in dets]))]


def split_per_image(t, per_image):
    """Split rows of `t` by the row counts of `per_image` (one image: no split, so that an
    exported graph keeps its dynamic row count)."""
    if len(per_image) == 1:
        return [t]
    return t.split([p.shape[0] for p in per_image])
