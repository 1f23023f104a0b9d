"""`load`: the one way to build a predictor, for the Python API and every command."""
from __future__ import annotations

from pathlib import Path

from mrcnn_cli.engine.predictor import Predictor
from mrcnn_cli.engine.preprocess import TEST_SCALE
from mrcnn_cli.errors import MrcnnError

BACKENDS = ('torch', 'onnxruntime', 'openvino')
_ALIASES = {'onnx': 'onnxruntime', 'ort': 'onnxruntime', 'pytorch': 'torch', 'ov': 'openvino'}


def load(name: str | None = None, *, weights: str | Path | None = None, onnx: str | Path | None = None,
         backend: str | None = None, style: str | None = None, device: str = 'auto', precision: str = 'fp32',
         compile: bool = False, weights_dir: str | Path | None = None, ort_provider: str | None = None,
         scale: tuple[int, int] = TEST_SCALE) -> Predictor:
    """A predictor: call it on an image, `predict` a list, `stream` any source.

    >>> model = load('mask-rcnn_r50_fpn_1x_coco')         # doctest: +SKIP
    >>> model = load(weights='ft.pth', style='caffe')      # doctest: +SKIP
    >>> model = load(onnx='r50.onnx', device='cpu')        # doctest: +SKIP

    `name` is a zoo entry (`mrcnn zoo list`), downloaded once into `weights_dir` and checked
    against its published checksum; `weights` a local checkpoint (with `name`: that entry's
    architecture and preprocessing with these weights); `onnx` a file from `mrcnn export`, run by
    ONNX Runtime (`ort_provider` cuda, tensorrt or cpu) or, with backend='openvino', by OpenVINO
    (`device` cpu, gpu, npu or auto; `precision` its inference precision).  `style` (pytorch,
    caffe) overrides what the checkpoint's training config says.  `device` auto, cpu, cuda or
    cuda:N; `precision` fp32, fp16 (CUDA) or bf16; `compile` torch.compile's the backbone, FPN and
    RPN head.  `scale` is the test-time resize bound (long, short); mmdetection's (1333, 800) gives
    its numbers.
    Errors are MrcnnError with a one-line message.
    """
    backend = _ALIASES.get(backend, backend) or ('onnxruntime' if onnx is not None else 'torch')
    if backend not in BACKENDS:
        raise MrcnnError(f'unknown backend {backend!r} (use torch, onnx or openvino)')
    if backend == 'openvino':
        if compile:
            raise MrcnnError('--compile applies to the torch backend (OpenVINO compiles the graph itself)')
        if onnx is None:
            raise MrcnnError('--backend openvino needs --onnx FILE (make one with `mrcnn export --onnx`)')
        if ort_provider is not None:
            raise MrcnnError('--ort-provider applies to --backend onnx; OpenVINO takes --device cpu|gpu|npu|auto')
        from mrcnn_cli.backends.openvino import OpenVinoPredictor
        return OpenVinoPredictor(onnx, device, precision, scale=scale)
    if backend == 'onnxruntime':
        if compile:
            raise MrcnnError('--compile applies to the torch backend (onnxruntime optimises the graph itself)')
        if onnx is None:
            raise MrcnnError('--backend onnx needs --onnx FILE (make one with `mrcnn export --onnx`)')
        if precision != 'fp32':
            raise MrcnnError('--fp16/--bf16 apply to the torch backend; export with `mrcnn export --fp16` instead')
        from mrcnn_cli.backends.onnx_runtime import OnnxPredictor
        return OnnxPredictor(onnx, device, ort_provider, scale=scale)
    from mrcnn_cli.backends.pytorch import TorchPredictor, check_precision, load_torch_model
    from mrcnn_cli.engine.predictor import resolve_device
    dev = resolve_device(device)
    check_precision(precision, dev)
    model, classes, source, palette = load_torch_model(name, weights, style, weights_dir)
    return TorchPredictor(model, classes, dev, source, precision=precision, compile=compile, palette=palette,
                          scale=scale, copy_model=False)   # the model was built for it alone
