"""The predictor interface that predict, eval and bench share, and its PyTorch backend."""
import warnings

import torch

from mrcnn_cli import MrcnnError
from mrcnn_cli.checkpoint import load_checkpoint, model_from_checkpoint
from mrcnn_cli.memory import keep_freed_memory
from mrcnn_cli.postprocess import to_detections
from mrcnn_cli.preprocess import pad_batch, padded_shape, prepare
from mrcnn_cli.stages import stage


def resolve_device(device='auto'):
    """'auto' picks the first CUDA GPU when there is one, else the CPU."""
    if device in (None, 'auto'):
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise MrcnnError(f"unknown device {device!r} (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == 'cuda' and not torch.cuda.is_available():
        raise MrcnnError(f'device {device} requested but no CUDA GPU is available')
    if dev.type not in ('cpu', 'cuda'):
        raise MrcnnError(f"unsupported device {device!r} (use auto, cpu, cuda or cuda:N)")
    return dev


PRECISIONS = ('fp32', 'fp16', 'bf16')


class Predictor:
    """BGR uint8 images in, Detections out.  Backends implement `run_network`."""

    name = 'base'

    def __init__(self, spec, classes, device, source, precision='fp32'):
        self.spec, self.classes, self.device, self.source = spec, classes, device, source
        self.precision = precision

    def run_network(self, batch, img_shapes):
        """(B, 3, H, W) padded batch -> per image (boxes, scores, labels, 28x28 mask probs)."""
        raise NotImplementedError

    def predict(self, img):
        """Detections for one BGR image, in original-image pixels, mmdetection's test thresholds."""
        return self.predict_batch([img])[0]

    def predict_batch(self, imgs):
        """Detections for several images; identical to predicting them one by one.

        Only images whose padded sizes are equal share a network batch (video frames always
        do): extra padding would change the features near the border and so the detections.
        """
        if self.device.type == 'cpu':
            keep_freed_memory()   # set on first use (a no-op after), so merely loading changes nothing
        with stage('preprocess'):
            prepared = [prepare(img, self.spec.norm, self.device) for img in imgs]
        groups = {}
        for i, p in enumerate(prepared):
            groups.setdefault(padded_shape(p.img_shape), []).append(i)
        results = [None] * len(imgs)
        for members in groups.values():
            with stage('preprocess'):
                batch = pad_batch([prepared[i].tensor for i in members])
            outs = self.run_network(batch, [prepared[i].img_shape for i in members])
            with stage('paste'):
                for i, (boxes, scores, labels, probs) in zip(members, outs):
                    results[i] = to_detections(boxes, scores, labels, probs, prepared[i].scale_factor,
                                               prepared[i].ori_shape)
        return results


class TorchPredictor(Predictor):
    name = 'torch'

    def __init__(self, model, classes, device, source, precision='fp32', compile=False):
        super().__init__(model.spec, classes, device, source, precision)
        self.amp_dtype = check_precision(precision, device)
        if compile:
            check_compiler(device)
        self.model = model.to(device).optimize_for_inference(device, self.amp_dtype, compile)
        self.compiled = compile

    @torch.inference_mode()
    def run_network(self, batch, img_shapes):
        return self.model(batch.to(self.device), img_shapes, self.amp_dtype)


def cpu_has_native_bf16():
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def check_precision(precision, device):
    """The autocast dtype for a precision name; FP16 needs CUDA (CPU FP16 convs are slow and inexact)."""
    if precision not in PRECISIONS:
        raise MrcnnError(f'unknown precision {precision!r} (use one of {", ".join(PRECISIONS)})')
    if precision == 'fp16':
        if device.type != 'cuda':
            raise MrcnnError('--fp16 needs a CUDA GPU; on the CPU use --bf16')
        return torch.float16
    if precision == 'bf16':
        if device.type == 'cpu' and not cpu_has_native_bf16():
            warnings.warn('this CPU has no native BF16 support (AVX512-BF16/AMX): --bf16 will be slow')
        return torch.bfloat16
    return None


def check_compiler(device):
    """torch.compile's inductor generates C++ on the CPU and Triton kernels on CUDA."""
    import importlib.util
    import os
    import shutil
    if device.type == 'cuda':
        if importlib.util.find_spec('triton') is None:
            raise MrcnnError('--compile on a GPU needs the triton package (pip install triton)')
    elif not shutil.which(os.environ.get('CXX', 'g++')):
        raise MrcnnError('--compile on the CPU needs a C++ compiler (g++, or set CXX)')


def load_torch_model(model_name=None, weights=None, style=None, weights_dir=None):
    """(MaskRCNN as loaded, classes, source) from a zoo name (downloaded on first use) and/or a
    local checkpoint."""
    from mrcnn_cli import zoo
    if model_name is None and weights is None:
        raise MrcnnError('no model given: pass --model NAME (see `mrcnn zoo list`) or --weights PATH')
    spec = None
    if model_name is not None:
        entry = zoo.get_entry(model_name)
        spec = entry.spec
        if weights is None:
            weights = zoo.ensure_downloaded(entry, weights_dir)
    model, classes = model_from_checkpoint(load_checkpoint(weights), spec=spec, style=style, source=str(weights))
    return model, classes, str(weights)


def load_torch_predictor(model_name=None, weights=None, style=None, device='auto', weights_dir=None,
                         precision='fp32', compile=False):
    """A TorchPredictor from a zoo name (downloaded on first use) and/or a local checkpoint."""
    dev = resolve_device(device)
    check_precision(precision, dev)
    model, classes, source = load_torch_model(model_name, weights, style, weights_dir)
    return TorchPredictor(model, classes, dev, source=source, precision=precision, compile=compile)
