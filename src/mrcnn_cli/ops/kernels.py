"""torchvision's compiled NMS and RoIAlign kernels, without importing the torchvision package:
`import torchvision` brings in its models, datasets and transforms and, through
`torchvision.ops`, torch._dynamo (a large share of start-up), while the kernels themselves are
one library that loads at once.  The calls are those `torchvision.ops.nms` and
`torchvision.ops.roi_align` make."""
import glob
import importlib.util
import os
import threading

import torch

_LOCK = threading.Lock()
_ready = False


def _load_kernels():
    """Register torchvision::nms and torchvision::roi_align (torchvision's own _C library, as
    torchvision.extension loads it); the whole package if that library cannot be found alone."""
    global _ready
    with _LOCK:
        if _ready:
            return
        if not hasattr(torch.ops.torchvision, 'nms'):   # not already there (torchvision imported)
            spec = importlib.util.find_spec('torchvision')
            folder = (spec.submodule_search_locations or [None])[0] if spec else None
            libraries = sorted(glob.glob(os.path.join(folder, '_C*.so'))) if folder else []
            if libraries:
                torch.ops.load_library(libraries[0])
            else:
                import torchvision  # noqa: F401 - another platform's layout: let torchvision load it
        _ready = True


def nms(boxes, scores, iou_threshold):
    """torchvision.ops.nms: indexes kept, by decreasing score."""
    _load_kernels()
    return torch.ops.torchvision.nms(boxes, scores, iou_threshold)


def roi_align(input, rois, output_size, spatial_scale=1.0, sampling_ratio=-1, aligned=False):
    """torchvision.ops.roi_align for a (K, 5) tensor of (batch index, x1, y1, x2, y2) rois."""
    if torch.are_deterministic_algorithms_enabled() and input.is_cuda:
        from torchvision.ops import roi_align as deterministic  # its pure-PyTorch form, as torchvision picks
        return deterministic(input, rois, output_size, spatial_scale, sampling_ratio, aligned)
    _load_kernels()
    h, w = (output_size, output_size) if isinstance(output_size, int) else output_size
    return torch.ops.torchvision.roi_align(input, rois, spatial_scale, h, w, sampling_ratio, aligned)
