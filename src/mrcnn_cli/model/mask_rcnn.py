"""Mask R-CNN with FPN: the one model core every backend runs, read top to bottom in `forward`."""
import contextlib

import torch
from torch import nn

from mrcnn_cli.model.backbone import ResNet
from mrcnn_cli.model.fpn import FPN
from mrcnn_cli.model.layers import no_stage
from mrcnn_cli.model.roi_heads import RoIHeads
from mrcnn_cli.model.rpn import RPNHead, RPNLevelOutput, select_proposals
from mrcnn_cli.model.spec import ModelSpec

# every padded input size is a graph of its own under --compile; past dynamo's default limit
# (8) new sizes would silently run eagerly
COMPILED_SIZES_LIMIT = 64


class MaskRCNN(nn.Module):
    def __init__(self, spec=ModelSpec()):
        super().__init__()
        self.spec = spec
        self.backbone = ResNet(spec.depth, spec.groups, spec.width_per_group, spec.style)
        self.neck = FPN(self.backbone.out_channels)
        self.rpn_head = RPNHead()
        self.roi_head = RoIHeads(spec.num_classes)
        self.input_format = torch.contiguous_format
        self.compiled = False   # set by optimize.compile_dense

    def forward(self, images, img_shapes, amp_dtype=None, stage=no_stage):
        """images: (B, 3, H, W) normalised and padded; img_shapes: per image (h, w) before padding.

        amp_dtype (torch.float16 / bfloat16) runs the convolutions and FCs under autocast;
        proposal selection, box decoding, NMS and the mask probabilities stay FP32.
        `stage(name)` makes a timing context per stage (see engine.timing).
        Returns one NetworkOutput per image (boxes in resized-image pixels).
        """
        amp = autocast(images.device.type, amp_dtype)
        with stage('backbone+fpn'), amp(), self._compile_scope():
            feats = self.neck(self.backbone(images.contiguous(memory_format=self.input_format)))
        with stage('rpn'):
            with amp(), self._compile_scope():
                head_outs = self.rpn_head(feats)
            head_outs = [RPNLevelOutput(o.objectness.float(), o.deltas.float()) for o in head_outs]
            proposals = [select_proposals(head_outs, i, shape) for i, shape in enumerate(img_shapes)]
        return self.roi_head(feats, proposals, img_shapes, amp, stage)

    def _compile_scope(self):
        """The settings the compiled modules compile under, for the length of a call.  Freezing is
        read from inductor's config when a graph is compiled (a `compile(options=...)` entry does
        not reach that switch): it turns the weights into constants, so that convolutions run
        as oneDNN's pre-packed kernels with their ReLU or sum fused."""
        if not self.compiled:
            return contextlib.nullcontext()
        import torch._dynamo.config as dynamo_config
        import torch._inductor.config as inductor_config
        scope = contextlib.ExitStack()
        scope.enter_context(dynamo_config.patch(
            recompile_limit=max(dynamo_config.recompile_limit, COMPILED_SIZES_LIMIT)))
        scope.enter_context(inductor_config.patch(freezing=True))
        return scope


def autocast(device_type, dtype):
    """A factory of autocast contexts (or of no-ops when dtype is None)."""
    if dtype is None:
        return contextlib.nullcontext
    return lambda: torch.autocast(device_type, dtype=dtype)


def build_model(spec, state_dict=None):
    """An eval-mode MaskRCNN for `spec`, with `state_dict` loaded when given (already checked).
    With a state dict the modules are made without memory or random init and take its tensors
    as they are (`assign`): the same numbers, without initialising and then copying the weights."""
    if state_dict is None:
        return MaskRCNN(spec).eval().requires_grad_(False)
    with torch.device('meta'):
        model = MaskRCNN(spec)
    missing, unexpected = model.load_state_dict(state_dict, strict=False, assign=True)
    missing = [k for k in missing if not k.endswith('num_batches_tracked')]
    if missing or unexpected:
        raise ValueError(f'state dict does not fit: missing {missing[:3]}, unexpected {unexpected[:3]}')
    for name, buf in model.named_buffers():   # what a checkpoint may leave out: BatchNorm step counters
        if buf.is_meta:
            model.get_submodule(name.rsplit('.', 1)[0]).register_buffer(
                name.rsplit('.', 1)[1], torch.zeros(buf.shape, dtype=buf.dtype))
    if any(t.is_meta for t in model.state_dict().values()):
        raise ValueError('state dict does not fit: some weights are missing')
    return model.eval().requires_grad_(False)
