"""Mask R-CNN with FPN: the one model core every backend runs."""
import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from mrcnn_cli.backbone import ResNet
from mrcnn_cli.fpn import FPN
from mrcnn_cli.preprocess import CAFFE_NORM, PYTORCH_NORM, X101_32X8D_NORM, Normalization
from mrcnn_cli.roi_heads import RoIHeads
from mrcnn_cli.rpn import RPNHead, proposals_single
from mrcnn_cli.stages import stage


@dataclass(frozen=True)
class ModelSpec:
    """Everything that fixes a checkpoint's architecture and preprocessing."""
    depth: int = 50
    groups: int = 1
    width_per_group: int = 64
    style: str = 'pytorch'
    num_classes: int = 80
    norm: Normalization = None

    def __post_init__(self):
        if self.norm is None:
            object.__setattr__(self, 'norm', default_norm(self))

    @property
    def backbone_name(self):
        if self.groups == 1:
            return f'R-{self.depth}'
        return f'X-{self.depth}-{self.groups}x{self.width_per_group}d'


def default_norm(spec):
    """The preprocessing mmdetection's configs pair with this backbone and style."""
    if spec.style == 'caffe':
        return CAFFE_NORM
    if (spec.depth, spec.groups, spec.width_per_group) == (101, 32, 8):
        return X101_32X8D_NORM
    return PYTORCH_NORM


class MaskRCNN(nn.Module):
    def __init__(self, spec=ModelSpec()):
        super().__init__()
        self.spec = spec
        self.backbone = ResNet(spec.depth, spec.groups, spec.width_per_group, spec.style)
        self.neck = FPN(self.backbone.out_channels)
        self.rpn_head = RPNHead()
        self.roi_head = RoIHeads(spec.num_classes)

    def forward(self, images, img_shapes, amp_dtype=None):
        """images: (B, 3, H, W) normalised and padded; img_shapes: per image (h, w) before padding.

        amp_dtype (torch.float16 / bfloat16) runs the convolutions and FCs under autocast;
        proposal selection, box decoding, NMS and the mask probabilities stay FP32.
        Returns per image (boxes in resized-image pixels, scores, labels, 28x28 mask probabilities).
        """
        amp = autocast(images.device.type, amp_dtype)
        with stage('backbone+fpn'), amp():
            feats = self.neck(self.backbone(images))
        with stage('rpn'):
            with amp():
                head_outs = self.rpn_head(feats)
            head_outs = [(c.float(), r.float()) for c, r in head_outs]
            proposals = [proposals_single(head_outs, i, shape)[0] for i, shape in enumerate(img_shapes)]
        return self.roi_head(feats, proposals, img_shapes, amp)


def autocast(device_type, dtype):
    """A factory of autocast contexts (or of no-ops when dtype is None)."""
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type, dtype=dtype)


def build_model(spec, state_dict=None):
    model = MaskRCNN(spec)
    if state_dict is not None:
        missing, unexpected = model.load_state_dict(state_dict, strict=False)
        missing = [k for k in missing if not k.endswith('num_batches_tracked')]
        assert not missing and not unexpected, (missing, unexpected)  # checked by checkpoint.py
    return model.eval().requires_grad_(False)
