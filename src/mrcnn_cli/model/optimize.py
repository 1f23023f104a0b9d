"""Rewrites of a loaded model for inference: the same function up to float rounding, faster."""
import copy

import torch
from torch import nn


def optimized_for_inference(model, device, amp_dtype=None, compile=False, copy_model=True):
    """A copy of `model` rewritten for inference on `device` (the model passed in is not changed;
    `copy_model=False` rewrites it in place, for a model nobody else holds).

    BatchNorms are folded into the backbone convs, and the dense convolutions run channels_last
    (the layout oneDNN and cuDNN are fastest in).  On the CPU the RoI features come channels-last
    out of the RoIAlign gather, so the box head's first FC takes its inputs in that order.

    With `amp_dtype` the conv and FC weights are stored in it: autocast would cast them to it
    on every call anyway (its weight cache only serves training), so the numbers are the same.
    Such a model must then run under autocast of that dtype.

    `compile` hands the dense part (backbone, FPN, RPN head: no host syncs inside) to
    `torch.compile` (see `compile_dense`)."""
    model = (copy.deepcopy(model) if copy_model else model).to(device)
    model.backbone.fold_batchnorm()
    dense = [model] if device.type == 'cuda' else [model.backbone, model.neck, model.rpn_head]
    for module in dense:
        module.to(memory_format=torch.channels_last)
    if device.type == 'cpu':
        model.roi_head.bbox_head.expect_channels_last()
    model.input_format = torch.channels_last
    if amp_dtype is not None:
        for m in model.modules():
            if isinstance(m, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
                m.to(amp_dtype)
    if compile:
        compile_dense(model, device)
    return model


def compile_dense(model, device):
    """torch.compile the backbone, FPN and RPN head in place.  Shapes are static: each new padded
    input size compiles once (tens of seconds on a CPU), so it pays off on video, fixed-size
    inputs and long runs.  On CUDA the compiled region also runs as a CUDA graph; inductor
    freezes the weights as constants (pre-packed for oneDNN on the CPU) under the settings
    `MaskRCNN._compile_scope` holds for the length of each call: no process-wide torch setting
    changes.  The RoI stages stay eager: their sizes depend on the data."""
    options = {'triton.cudagraphs': True} if device.type == 'cuda' else {}   # what mode='reduce-overhead' sets
    for module in (model.backbone, model.neck, model.rpn_head):
        module.compile(dynamic=False, fullgraph=True, options=options)
    model.compiled = True
