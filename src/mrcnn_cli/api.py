"""`load`: the one way to build a predictor, for the Python API and every command."""
from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypedDict, cast

from mrcnn_cli.backends.registry import load_choice
from mrcnn_cli.engine.choice import ModelChoice, Precision
from mrcnn_cli.errors import MrcnnError, option
from mrcnn_cli.io.files import model_file_kind
from mrcnn_cli.predictor import Predictor

if TYPE_CHECKING:
    from typing_extensions import Unpack

MODEL_FILE_SUFFIXES = ('.pth', '.pt', '.ckpt', '.bin', '.onnx', '.xml')
GRAPH_KINDS = {'onnx': 'an ONNX file', 'openvino': 'an OpenVINO model'}   # what `mrcnn export` writes


class LoadOptions(TypedDict, total=False):
    """`load`'s keyword options: the fields of ModelChoice (a test keeps the two the same)."""
    weights: str | os.PathLike | None
    onnx: str | os.PathLike | None
    backend: str | None
    style: str | None
    device: str
    precision: str | Precision
    compile: bool
    scale: tuple[int, int]
    weights_dir: str | os.PathLike | None
    ort_provider: str | None


def load(name: str | os.PathLike | ModelChoice | None = None, **options: Unpack[LoadOptions]) -> Predictor:
    """A predictor: call it on an image, `predict` a list, `stream` any source.

    >>> model = load('mask-rcnn_r50_fpn_1x_coco')         # doctest: +SKIP
    >>> model = load('ft.pth', style='caffe')              # doctest: +SKIP
    >>> model = load('r50.onnx', device='cpu')             # doctest: +SKIP

    `name` is a zoo entry (`mrcnn zoo list`), downloaded once into `weights_dir` and checked
    against its published checksum, or the path of a checkpoint or an ONNX file (told apart by
    their content), or a whole ModelChoice.  `weights`: a local checkpoint (with `name`: that
    entry's architecture and preprocessing with these weights); `onnx`: a file from `mrcnn
    export`, run by ONNX Runtime (`ort_provider` cuda, tensorrt or cpu) or, with
    backend='openvino', by OpenVINO (`device` cpu, gpu, npu or auto; `precision` its inference
    precision).  `style` (pytorch, caffe) overrides what the checkpoint's training config says.
    `device` auto, cpu, cuda or cuda:N; `precision` fp32, fp16 (CUDA) or bf16; `compile`
    torch.compile's the backbone, FPN and RPN head.  `scale` is the test-time resize bound (long,
    short); mmdetection's (1333, 800) gives its numbers.
    Errors are MrcnnError with a one-line message.
    """
    if isinstance(name, ModelChoice):
        if options:
            raise MrcnnError('pass a ModelChoice alone, or a name with keyword options')
        choice = name
    else:
        fields = cast(dict[str, Any], dict(options))
        if 'precision' in fields:
            fields['precision'] = Precision.of(fields['precision'])
        choice = ModelChoice(name=name, **fields)   # an unknown keyword is a TypeError, as for any function
    return Predictor(load_choice(sorted_files(choice)))


def sorted_files(choice: ModelChoice) -> ModelChoice:
    """The choice with a `name` that is a file moved to `weights` or `onnx` by its content; a file
    passed as the wrong kind is one MrcnnError saying which it is."""
    name, weights, onnx = choice.name, choice.weights, choice.onnx
    if name is not None and not Path(name).exists() and (isinstance(name, os.PathLike) or os.sep in str(name)
                                                         or Path(name).suffix.lower() in MODEL_FILE_SUFFIXES):
        raise MrcnnError(f'model file not found: {name}')
    if name is not None and (isinstance(name, os.PathLike) or Path(name).is_file()):
        kind = model_file_kind(name)
        if kind is None:
            raise MrcnnError(f'{name} is neither a PyTorch checkpoint nor an ONNX file (nor an OpenVINO model; '
                             'pass a zoo name, see `mrcnn zoo list`, or a model file)')
        if (weights if kind == 'checkpoint' else onnx) is not None:
            raise MrcnnError(f'{name} is a model file and {option("weights" if kind == "checkpoint" else "onnx")} '
                             'names another: pass one of them')
        name, weights, onnx = (None, name, onnx) if kind == 'checkpoint' else (None, weights, name)
        choice = replace(choice, name=None, weights=weights, onnx=onnx)
    graph_kind = model_file_kind(weights) if weights is not None else None
    if graph_kind in GRAPH_KINDS:
        raise MrcnnError(f'{weights} is {GRAPH_KINDS[graph_kind]}, not a PyTorch checkpoint: pass it as '
                         f'{option("onnx", meta=str(weights))}')
    if onnx is not None and model_file_kind(onnx) == 'checkpoint':
        raise MrcnnError(f'{onnx} is a PyTorch checkpoint, not an ONNX file: pass it as '
                         f'{option("weights", meta=str(onnx))}')
    return choice
