"""`load`: the one way to build a predictor, for the Python API and every command."""
from __future__ import annotations

import os
from pathlib import Path

from mrcnn_cli.engine.predictor import Predictor
from mrcnn_cli.engine.preprocess import TEST_SCALE
from mrcnn_cli.errors import MrcnnError, option
from mrcnn_cli.io.files import model_file_kind

BACKENDS = ('torch', 'onnxruntime', 'openvino')
MODEL_FILE_SUFFIXES = ('.pth', '.pt', '.ckpt', '.bin', '.onnx')
_ALIASES = {'onnx': 'onnxruntime', 'ort': 'onnxruntime', 'pytorch': 'torch', 'ov': 'openvino'}


def load(name: str | os.PathLike | None = None, *, weights: str | os.PathLike | None = None,
         onnx: str | os.PathLike | None = None, backend: str | None = None, style: str | None = None,
         device: str = 'auto', precision: str = 'fp32', compile: bool = False,
         weights_dir: str | os.PathLike | None = None, ort_provider: str | None = None,
         scale: tuple[int, int] = TEST_SCALE) -> Predictor:
    """A predictor: call it on an image, `predict` a list, `stream` any source.

    >>> model = load('mask-rcnn_r50_fpn_1x_coco')         # doctest: +SKIP
    >>> model = load('ft.pth', style='caffe')              # doctest: +SKIP
    >>> model = load('r50.onnx', device='cpu')             # doctest: +SKIP

    `name` is a zoo entry (`mrcnn zoo list`), downloaded once into `weights_dir` and checked
    against its published checksum, or the path of a checkpoint or an ONNX file (told apart by
    their content); `weights` a local checkpoint (with `name`: that entry's architecture and
    preprocessing with these weights); `onnx` a file from `mrcnn export`, run by ONNX Runtime
    (`ort_provider` cuda, tensorrt or cpu) or, with backend='openvino', by OpenVINO (`device`
    cpu, gpu, npu or auto; `precision` its inference precision).  `style` (pytorch, caffe)
    overrides what the checkpoint's training config says.  `device` auto, cpu, cuda or cuda:N;
    `precision` fp32, fp16 (CUDA) or bf16; `compile` torch.compile's the backbone, FPN and RPN
    head.  `scale` is the test-time resize bound (long, short); mmdetection's (1333, 800) gives
    its numbers.
    Errors are MrcnnError with a one-line message.
    """
    name, weights, onnx = _sort_files(name, weights, onnx)
    backend = (_ALIASES.get(backend, backend) if backend else None) or ('onnxruntime' if onnx is not None else 'torch')
    if backend not in BACKENDS:
        raise MrcnnError(f'unknown backend {backend!r} (use torch, onnxruntime or openvino)')
    if backend != 'torch':
        _check_graph_options(backend, onnx, compile, precision, ort_provider)
    if backend == 'openvino':
        from mrcnn_cli.backends.openvino import OpenVinoPredictor
        return OpenVinoPredictor(onnx, device, precision, scale=scale)
    if backend == 'onnxruntime':
        from mrcnn_cli.backends.onnx_runtime import OnnxPredictor
        return OnnxPredictor(onnx, device, ort_provider, scale=scale)
    from mrcnn_cli.backends.pytorch import TorchPredictor, check_precision, load_torch_model
    from mrcnn_cli.engine.predictor import resolve_device
    dev = resolve_device(device)
    check_precision(precision, dev)
    model, classes, source, palette = load_torch_model(name, weights, style, weights_dir)
    return TorchPredictor(model, classes, dev, source, precision=precision, compile=compile, palette=palette,
                          scale=scale, copy_model=False)   # the model was built for it alone


def _sort_files(name: str | os.PathLike | None, weights: str | os.PathLike | None, onnx: str | os.PathLike | None,
                ) -> tuple[str | None, str | os.PathLike | None, str | os.PathLike | None]:
    """(zoo name, checkpoint, ONNX file): a `name` that is a file becomes the one or the other by
    its content, and a file passed as the wrong kind is one MrcnnError saying which it is."""
    if name is not None and not Path(name).exists() and (isinstance(name, os.PathLike) or os.sep in str(name)
                                                         or Path(name).suffix.lower() in MODEL_FILE_SUFFIXES):
        raise MrcnnError(f'model file not found: {name}')
    if name is not None and (isinstance(name, os.PathLike) or Path(name).is_file()):
        kind = model_file_kind(name)
        if kind is None:
            raise MrcnnError(f'{name} is neither a PyTorch checkpoint nor an ONNX file (pass a zoo name, '
                             'see `mrcnn zoo list`, or a model file)')
        if (weights if kind == 'checkpoint' else onnx) is not None:
            raise MrcnnError(f'{name} is a model file and {option("weights" if kind == "checkpoint" else "onnx")} '
                             'names another: pass one of them')
        name, weights, onnx = (None, name, onnx) if kind == 'checkpoint' else (None, weights, name)
    if weights is not None and model_file_kind(weights) == 'onnx':
        raise MrcnnError(f'{weights} is an ONNX file, not a PyTorch checkpoint: pass it as '
                         f'{option("onnx", meta=str(weights))}')
    if onnx is not None and model_file_kind(onnx) == 'checkpoint':
        raise MrcnnError(f'{onnx} is a PyTorch checkpoint, not an ONNX file: pass it as '
                         f'{option("weights", meta=str(onnx))}')
    return name, weights, onnx


def _check_graph_options(backend: str, onnx: str | os.PathLike | None, compile: bool, precision: str,
                         ort_provider: str | None) -> None:
    """What the exported-graph backends cannot take, each as one MrcnnError."""
    engine = 'OpenVINO' if backend == 'openvino' else 'onnxruntime'
    if compile:
        raise MrcnnError(f'{option("compile", True)} applies to the torch backend ({engine} optimises the graph '
                         'itself)')
    if onnx is None:
        raise MrcnnError(f'{option("backend", backend)} needs {option("onnx", meta="FILE")} '
                         '(make one with `mrcnn export --onnx`)')
    if backend == 'openvino' and ort_provider is not None:
        raise MrcnnError(f'{option("ort_provider")} applies to ONNX Runtime; OpenVINO takes '
                         f'{option("device", meta="cpu|gpu|npu|auto")}')
    if backend == 'onnxruntime' and precision != 'fp32':
        raise MrcnnError(f'{option("precision", precision)} applies to the torch and OpenVINO backends; for ONNX '
                         'Runtime export an FP16 graph with `mrcnn export --fp16`')
