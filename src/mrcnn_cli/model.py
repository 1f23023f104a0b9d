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
        self.input_format = torch.contiguous_format

    def optimize_for_inference(self, device, amp_dtype=None, compile=False):
        """Rewrites done once at load, same function up to float rounding: BatchNorms folded into
        the backbone convs, and the dense convolutions in channels_last (the layout oneDNN and
        cuDNN are fastest in).  Measured on 2 CPU cores: backbone+FPN 2.14 s -> 1.54 s per
        800x1216 image.  On the CPU the RoI features come channels-last out of `roi_align_nhwc`,
        so the box head's first FC takes its inputs in that order.

        With `amp_dtype` the conv and FC weights are stored in it: autocast would cast them to it
        on every call anyway (its weight cache only serves training), so the numbers are the same.
        Such a model must then run under autocast of that dtype.

        `compile` hands the dense part (backbone, FPN, RPN head: no host syncs inside) to
        `torch.compile` with static shapes (see `compile_dense`)."""
        self.backbone.fold_batchnorm()
        dense = [self] if device.type == 'cuda' else [self.backbone, self.neck, self.rpn_head]
        for module in dense:
            module.to(memory_format=torch.channels_last)
        if device.type == 'cpu':
            self.roi_head.bbox_head.expect_channels_last()
        self.input_format = torch.channels_last
        if amp_dtype is not None:
            for m in self.modules():
                if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                    m.to(amp_dtype)
        if compile:
            compile_dense(self, device)
        return self

    def forward(self, images, img_shapes, amp_dtype=None):
        """images: (B, 3, H, W) normalised and padded; img_shapes: per image (h, w) before padding.

        amp_dtype (torch.float16 / bfloat16) runs the convolutions and FCs under autocast;
        proposal selection, box decoding, NMS and the mask probabilities stay FP32.
        Returns per image (boxes in resized-image pixels, scores, labels, 28x28 mask probabilities).
        """
        amp = autocast(images.device.type, amp_dtype)
        with stage('backbone+fpn'), amp():
            feats = self.neck(self.backbone(images.contiguous(memory_format=self.input_format)))
        with stage('rpn'):
            with amp():
                head_outs = self.rpn_head(feats)
            head_outs = [(c.float(), r.float()) for c, r in head_outs]
            proposals = [proposals_single(head_outs, i, shape)[0] for i, shape in enumerate(img_shapes)]
        return self.roi_head(feats, proposals, img_shapes, amp)


def compile_dense(model, device):
    """torch.compile the backbone, FPN and RPN head in place.  Shapes are static: each new padded
    input size compiles once (tens of seconds on a CPU), so it pays off on video, fixed-size
    inputs and long runs.  On CUDA the compiled region also runs as a CUDA graph
    ('reduce-overhead'); on the CPU inductor freezes the weights as constants (pre-packed for
    oneDNN).  The RoI stages stay eager: their sizes depend on the data."""
    import logging

    import torch._dynamo.config as dynamo_config
    import torch._inductor.config as inductor_config
    inductor_config.freezing = True
    if device.type == 'cpu':   # inductor's C++ toolchain probe warns that a CPU build has no CUDA
        logging.getLogger('torch.utils.cpp_extension').setLevel(logging.ERROR)
    # every padded size is its own graph; past the limit dynamo would run new sizes eagerly
    dynamo_config.recompile_limit = max(dynamo_config.recompile_limit, 64)
    mode = 'reduce-overhead' if device.type == 'cuda' else None
    for module in (model.backbone, model.neck, model.rpn_head):
        module.compile(mode=mode, dynamic=False, fullgraph=True)


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
