"""The PyTorch backend: mrcnn's own model on the CPU or a CUDA GPU."""
from __future__ import annotations

import importlib.util
import os
import shutil
from dataclasses import dataclass

import torch

from mrcnn_cli.backends.base import Backend, resolve_device
from mrcnn_cli.engine.choice import ModelChoice, Precision
from mrcnn_cli.engine.preprocess import TEST_SCALE
from mrcnn_cli.engine.timing import no_stage
from mrcnn_cli.errors import MrcnnError, option, speaking_to_command_line, warn
from mrcnn_cli.io.checkpoint import class_names, foreign_model_reason, load_checkpoint, resolve_spec
from mrcnn_cli.model.mask_rcnn import MaskRCNN, build_model
from mrcnn_cli.model.optimize import optimized_for_inference


@dataclass(frozen=True)
class LoadedModel:
    """A checkpoint's model as loaded (not yet optimised for inference) and what it came with."""
    model: MaskRCNN
    classes: tuple[str, ...]
    source: str                                            # the weights file
    palette: tuple[tuple[int, int, int], ...] | None       # the checkpoint's class colours (RGB)


class TorchBackend(Backend):
    """A loaded MaskRCNN behind the Backend interface.  The model it is given is not changed:
    it runs an optimised copy (see `optimized_for_inference`), unless `copy_model=False` says
    the model is its own (as `load` builds it)."""

    name = 'torch'
    precisions = (Precision.FP32, Precision.FP16, Precision.BF16)
    compiles = True
    precision_hint = ('; INT8 runs on OpenVINO: `mrcnn export --int8 FILE.xml --calib DIR`, then '
                      '--onnx FILE.xml')

    @classmethod
    def from_choice(cls, choice: ModelChoice) -> TorchBackend:
        device = resolve_device(choice.device)
        check_precision(choice.precision, device)   # before the checkpoint is read
        loaded = load_torch_model(choice.name, choice.weights, choice.style, choice.weights_dir)
        return cls(loaded, device, precision=choice.precision, compile=choice.compile, scale=choice.scale,
                   copy_model=False)   # the model was built for it alone

    def __init__(self, loaded: LoadedModel, device: str | torch.device, *, precision: str | Precision = 'fp32',
                 compile: bool = False, scale: tuple[int, int] = TEST_SCALE, copy_model: bool = True) -> None:
        device = resolve_device(device) if not isinstance(device, torch.device) else device
        super().__init__(loaded.model.spec, loaded.classes, device, loaded.source, precision, loaded.palette, scale)
        self.amp_dtype = check_precision(self.precision, device)
        if compile:
            check_compiler(device)
        self.model = optimized_for_inference(loaded.model, device, self.amp_dtype, compile, copy_model)
        self.compiled = compile

    @torch.inference_mode()
    def run_network(self, batch, img_shapes, stage=no_stage):
        return self.model(batch.to(self.device), img_shapes, self.amp_dtype, stage)

    @classmethod
    def bench_precisions(cls, requested: Precision, device: str) -> tuple[Precision, ...]:
        # FP32 and BF16 side by side where the CPU computes BF16 natively, as OpenVINO's rows
        if requested == Precision.FP32 and on_cpu(device) and cpu_has_native_bf16():
            return (Precision.FP32, Precision.BF16)
        return (requested,)

    @classmethod
    def bench_note(cls, device: str) -> str | None:
        if not on_cpu(device) or cpu_has_native_bf16():
            return None
        return ('warning: no torch bf16 row: this CPU has no native BF16 (AVX512-BF16 or AMX), where it runs '
                'slower than FP32')

    def torch_model(self) -> MaskRCNN:
        return self.model

    def precision_note(self) -> str:
        return f'{self.precision}, compiled' if self.compiled else str(self.precision)


def on_cpu(device: str) -> bool:
    """Whether a command's `device` runs the torch model on the CPU (without resolving a GPU that
    is not there: bench plans CUDA rows before loading anything)."""
    if device in (None, 'auto'):
        return not torch.cuda.is_available()
    return str(device) == 'cpu'


def cpu_has_native_bf16():
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def check_precision(precision, device):
    """The autocast dtype for a precision; FP16 needs CUDA (CPU FP16 convs are slow and inexact)."""
    precision = Precision.of(precision)
    if precision == Precision.FP16:
        if device.type != 'cuda':
            raise MrcnnError(f'{option("precision", "fp16")} needs a CUDA GPU; on the CPU use '
                             f'{option("precision", "bf16")}')
        return torch.float16
    if precision == Precision.BF16:
        if device.type == 'cpu' and not cpu_has_native_bf16():
            warn(f'this CPU has no native BF16 support (AVX512-BF16/AMX): {option("precision", "bf16")} will be slow; '
                 f'{option("precision", "fp32")} is faster here')
        return torch.bfloat16
    return None


def check_compiler(device):
    """torch.compile's inductor generates C++ on the CPU and Triton kernels on CUDA."""
    if device.type == 'cuda':
        if importlib.util.find_spec('triton') is None:
            raise MrcnnError(f'{option("compile", True)} on a GPU needs the triton package (pip install triton)')
    elif not shutil.which(os.environ.get('CXX', 'g++')):
        raise MrcnnError(f'{option("compile", True)} on the CPU needs a C++ compiler (g++, or set CXX)')


def check_state_dict(model, state_dict, source):
    """One clear line naming what does not fit: missing or unexpected keys, wrong shapes."""
    expected = {k: v.shape for k, v in model.state_dict().items() if not k.endswith('num_batches_tracked')}
    given = {k: v for k, v in state_dict.items() if not k.endswith('num_batches_tracked')}
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    wrong = sorted(k for k in set(expected) & set(given) if tuple(given[k].shape) != tuple(expected[k]))
    problems = []
    if missing:
        problems.append(f'{len(missing)} missing keys (e.g. {missing[0]})')
    if unexpected:
        problems.append(f'{len(unexpected)} unexpected keys (e.g. {unexpected[0]})')
    if wrong:
        k = wrong[0]
        problems.append(f'{len(wrong)} shape mismatches (e.g. {k}: checkpoint {tuple(given[k].shape)}, '
                        f'model {tuple(expected[k])})')
    if problems:
        reason = foreign_model_reason(state_dict) if missing or unexpected else ''
        raise MrcnnError(f'{source}: wrong architecture for {model.spec.backbone_name} '
                         f'{model.spec.style} Mask R-CNN: ' + '; '.join(problems) + (f' ({reason})' if reason else ''))


def model_from_checkpoint(ckpt, spec=None, style=None, source='checkpoint'):
    """(MaskRCNN, classes) for a loaded Checkpoint; see `resolve_spec` for the architecture."""
    spec = resolve_spec(ckpt, spec, style, source)
    with torch.device('meta'):   # shapes only: no memory, no init
        check_state_dict(build_model(spec), ckpt.state_dict, source)
    sd = {k: v.float() if v.is_floating_point() else v for k, v in ckpt.state_dict.items()}
    return build_model(spec, sd), class_names(ckpt, spec.num_classes)


def load_torch_model(model_name=None, weights=None, style=None, weights_dir=None) -> LoadedModel:
    """The LoadedModel of a zoo name (downloaded on first use, checksum-verified) and/or a local
    checkpoint."""
    from mrcnn_cli.io import zoo
    if model_name is None and weights is None:
        zoo_name = '--model NAME' if speaking_to_command_line() else "a zoo name (load('NAME'))"
        raise MrcnnError(f'no model given: pass {zoo_name} (see `mrcnn zoo list`), '
                         f'{option("weights", meta="PATH")} or {option("onnx", meta="FILE")}')
    spec = None
    if model_name is not None:
        entry = zoo.get_entry(model_name)
        spec = entry.spec
        if weights is None:
            weights = zoo.ensure_downloaded(entry, weights_dir)
    ckpt = load_checkpoint(weights)
    model, classes = model_from_checkpoint(ckpt, spec=spec, style=style, source=str(weights))
    return LoadedModel(model, tuple(classes), str(weights), ckpt.palette)
