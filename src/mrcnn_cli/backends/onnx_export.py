"""`mrcnn export --onnx`: one ONNX file with the whole network (standard operators only)."""
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from mrcnn_cli.backends.onnx_graph import INPUT_NAMES, OUTPUT_NAMES
from mrcnn_cli.backends.onnx_metadata import model_metadata
from mrcnn_cli.errors import MrcnnError, option
from mrcnn_cli.io.files import atomic_path, file_sha256

DEMO_IMAGE = Path(__file__).resolve().parents[1] / 'data' / 'demo.jpg'
DEFAULT_OPSET = 17        # RoiAlign-16 (half_pixel = aligned=True); onnxruntime >= 1.25 runs it on CUDA


class ExportedNetwork(nn.Module):
    """The graph's contract: a normalised (1, 3, H, W) image zero-padded to H and W multiples of
    32 (as mmdetection pads; the FPN's upsampling is traced as a constant 2x) and its unpadded
    (h, w) in, detections in resized-image pixels and 28x28 mask probabilities out."""

    def __init__(self, model, amp_dtype=None):
        super().__init__()
        self.model = model
        self.amp_dtype = amp_dtype

    def forward(self, image, img_shape):
        shape = img_shape.to(torch.float32)
        out, = self.model(image, [(shape[0], shape[1])], self.amp_dtype)
        return tuple(out)


def export_onnx(predictor, out_path, opset=DEFAULT_OPSET, fp16=False, sample_image=None):
    """Trace the predictor's model into `out_path` (atomically) with metadata; returns seconds taken."""
    import onnx
    if opset < 16:
        raise MrcnnError(f'{option("opset")} must be >= 16 (RoiAlign with aligned=True semantics needs opset 16)')
    if predictor.precision != 'fp32':
        raise MrcnnError(f'export from an FP32 predictor ({option("fp16", True)} makes the FP16 graph from FP32 '
                         'weights)')
    import torchvision.ops  # noqa: F401 - registers the ONNX forms of torchvision::nms and ::roi_align
    model = predictor.torch_model().cpu().eval()
    sample = _sample_input(predictor, sample_image)
    start = time.perf_counter()
    # export restores the wrapper's mode on everything inside
    net = ExportedNetwork(model, torch.float16 if fp16 else None).eval()
    with atomic_path(out_path) as tmp, warnings.catch_warnings():
        warnings.simplefilter('ignore')
        with torch.no_grad():
            torch.onnx.export(net, sample, str(tmp), dynamo=False, opset_version=opset,
                              input_names=INPUT_NAMES, output_names=OUTPUT_NAMES,
                              dynamic_axes={'image': {2: 'height', 3: 'width'}, 'boxes': {0: 'n'},
                                            'scores': {0: 'n'}, 'labels': {0: 'n'}, 'mask_probs': {0: 'n'}})
        proto = onnx.load(str(tmp))
        source = Path(predictor.source)
        meta = model_metadata(predictor.spec, predictor.classes, predictor.source,
                              file_sha256(source) if source.is_file() else None, 'fp16' if fp16 else 'fp32', opset,
                              predictor.palette)
        for key, value in meta.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.checker.check_model(proto)
        onnx.save(proto, str(tmp))
    predictor.torch_model().to(predictor.device)
    return time.perf_counter() - start


def _sample_input(predictor, sample_image):
    import numpy as np

    from mrcnn_cli.engine.preprocess import pad_batch, prepare
    img = sample_image if sample_image is not None else np.full((480, 640, 3), 114, np.uint8)
    p = prepare(img, predictor.spec.norm, 'cpu')
    return pad_batch([p.tensor]), torch.tensor(p.img_shape, dtype=torch.int64)
