"""`Backend`: the base of every backend (PyTorch, ONNX Runtime, OpenVINO).  A backend is a Runner
(engine.runner) that also says what it takes, for `load`, bench's rows and the command line to
consult instead of backend names, and describes itself.  It implements `run_network` and
`from_choice`; `mrcnn_cli.Predictor` wraps one for users."""
from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np
import torch

from mrcnn_cli.engine.choice import ModelChoice, Precision
from mrcnn_cli.engine.detections import Detections
from mrcnn_cli.engine.preprocess import TEST_SCALE, Prepared, check_scale, prepare
from mrcnn_cli.engine.runner import Palette, Stage, detections_of
from mrcnn_cli.engine.timing import no_stage
from mrcnn_cli.errors import MrcnnError, option
from mrcnn_cli.io.files import file_sha256

if TYPE_CHECKING:
    from mrcnn_cli.model.mask_rcnn import MaskRCNN
    from mrcnn_cli.model.roi_heads import NetworkOutput
    from mrcnn_cli.model.spec import ModelSpec


def resolve_device(device: str | torch.device | None = 'auto') -> torch.device:
    """'auto' picks the first CUDA GPU when there is one, else the CPU."""
    if device in (None, 'auto'):
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise MrcnnError(f"unknown device {device!r} (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == 'cuda' and not torch.cuda.is_available():
        raise MrcnnError(f'device {device} requested but no CUDA GPU is available')
    if dev.type not in ('cpu', 'cuda'):
        raise MrcnnError(f"unsupported device {device!r} (use auto, cpu, cuda or cuda:N)")
    return dev


class Backend:
    """A model behind the Runner interface, on one backend."""

    name: ClassVar[str] = 'base'                          # the one spelling: --backend NAME, backend='NAME'
    precisions: ClassVar[tuple[Precision, ...]] = (Precision.FP32,)
    batches: ClassVar[bool] = True        # several images per network call (else one, whatever batch_size)
    compiles: ClassVar[bool] = False      # takes compile=True
    runs_graph: ClassVar[bool] = False    # runs an `mrcnn export` file (onnx=), not a checkpoint
    takes_provider: ClassVar[bool] = False   # takes ort_provider=
    describe_template: ClassVar[str] = '{name} backend on {device}'   # what runs the network, for describe()
    precision_hint: ClassVar[str] = ''    # what to do instead when a precision is refused
    compiled: bool = False                # this backend runs torch.compile'd code

    @classmethod
    def from_choice(cls, choice: ModelChoice) -> Backend:
        """This backend for a ModelChoice that `check_choice` accepted."""
        raise NotImplementedError

    @classmethod
    def check_choice(cls, choice: ModelChoice) -> None:
        """One MrcnnError for an option this backend does not take (never ignored quietly)."""
        if choice.compile and not cls.compiles:
            raise MrcnnError(f'{option("compile", True)} applies to the torch backend, not {cls.name}')
        if cls.runs_graph and choice.onnx is None:
            raise MrcnnError(f'{option("backend", cls.name)} needs {option("onnx", meta="FILE")} '
                             '(make one with `mrcnn export --onnx`)')
        if not cls.runs_graph and choice.onnx is not None:
            raise MrcnnError(f'{option("onnx", meta="FILE")} is run by the onnx or openvino backend, not '
                             f'{option("backend", cls.name)}')
        if choice.ort_provider is not None and not cls.takes_provider:
            raise MrcnnError(f'{option("ort_provider")} applies to the onnx backend (ONNX Runtime), not {cls.name}')
        if choice.precision not in cls.precisions:
            raise MrcnnError(f'{option("precision", choice.precision.value)} does not apply to the {cls.name} '
                             f'backend (it runs {", ".join(p.value for p in cls.precisions)}){cls.precision_hint}')

    @classmethod
    def available(cls) -> bool:
        """Whether what this backend needs is installed."""
        return True

    @classmethod
    def device_for(cls, device: str) -> str:
        """The device this backend runs on when a command's rows share `device` (bench)."""
        return device

    @classmethod
    def bench_precisions(cls, requested: Precision, device: str) -> tuple[Precision, ...]:
        """The precisions `mrcnn bench --backend all` times this backend in on `device` (on the
        CPU: those it computes natively here)."""
        return (requested,) if requested in cls.precisions else (Precision.FP32,)

    @classmethod
    def bench_note(cls, device: str) -> str | None:
        """A warning line for what `bench_precisions` leaves out on this machine, if anything."""
        return None

    def __init__(self, spec: ModelSpec, classes: Sequence[str], device: torch.device, source: str,
                 precision: str | Precision = Precision.FP32, palette: Palette | None = None,
                 scale: tuple[int, int] = TEST_SCALE) -> None:
        self.spec, self.device, self.source, self.precision = spec, device, source, Precision.of(precision)
        self._classes: tuple[str, ...] = tuple(classes)
        self.palette = palette
        self._scale: tuple[int, int] = check_scale(scale)

    @property
    def classes(self) -> tuple[str, ...]:
        return self._classes

    @property
    def scale(self) -> tuple[int, int]:
        return self._scale

    @scale.setter
    def scale(self, value: tuple[int, int]) -> None:
        self._scale = check_scale(value)

    @property
    def execution_device(self) -> str:
        """What runs the network: 'cpu', 'cuda:0', an onnxruntime provider, an OpenVINO device."""
        return str(self.device)

    def torch_model(self) -> MaskRCNN:
        """The PyTorch model behind this backend (what `mrcnn export` traces)."""
        raise MrcnnError(f'the {self.name} backend runs an exported graph, not a PyTorch model: export from '
                         f'a checkpoint ({option("weights", meta="PATH")} or a zoo name)')

    def run_network(self, batch: torch.Tensor, img_shapes: Sequence[tuple[int, int]],
                    stage: Stage = no_stage) -> list[NetworkOutput]:
        """(B, 3, H, W) padded batch -> one NetworkOutput per image."""
        raise NotImplementedError

    def prepare(self, image: np.ndarray) -> Prepared:
        """One BGR array resized, normalised and padded for the network (thread-safe)."""
        return prepare(image, self.spec.norm, self.device, self.scale)

    def predict_prepared(self, prepared: Sequence[Prepared], stage: Stage = no_stage) -> list[Detections]:
        """Detections for images made ready by `prepare` (see engine.runner.detections_of)."""
        return detections_of(prepared, self.run_network, self.classes, self.palette, stage)

    def predict_batch(self, images: Iterable[np.ndarray], stage: Stage = no_stage) -> list[Detections]:
        """Detections for several BGR arrays; identical to predicting them one by one."""
        with stage('preprocess'):
            prepared = [self.prepare(img) for img in images]
        return self.predict_prepared(prepared, stage)

    @functools.cached_property
    def weights_sha256(self) -> str | None:
        """The SHA-256 of the weights file (what a results log records of its run), once per backend."""
        path = Path(str(self.source))
        return file_sha256(path) if path.is_file() else None

    def identity(self) -> dict[str, Any]:
        """What about this model changes its results, as plain JSON types: what a results log
        records so that a resume or a merge never mixes two models."""
        return {'model': f'{self.spec.backbone_name} {self.spec.style}',
                'weights_sha256': self.weights_sha256 or str(self.source),
                'backend': self.name, 'precision': self.precision, 'scale': list(self.scale),
                'classes': list(self.classes)}

    def describe(self) -> str:
        """One line: architecture, backend, device, precision and where the weights came from."""
        scale = '' if self.scale == TEST_SCALE else f', scale {self.scale[0]}x{self.scale[1]}'
        runs_on = self.describe_template.format(name=self.name, device=self.execution_device)
        return (f'{self.spec.backbone_name} {self.spec.style}, {runs_on} ({self.precision_note()}{scale}), '
                f'from {self.source}')

    def precision_note(self) -> str:
        return str(self.precision)

    def __repr__(self) -> str:
        return f'<{type(self).__name__}: {self.describe()}>'
