"""The backends `load` builds, by their one name.  Adding a backend is one module (a Backend
subclass declaring what it takes) and one entry in BACKENDS."""
from __future__ import annotations

from mrcnn_cli.backends.base import Backend
from mrcnn_cli.backends.onnx_runtime import OnnxBackend
from mrcnn_cli.backends.openvino import OpenVinoBackend
from mrcnn_cli.backends.pytorch import TorchBackend
from mrcnn_cli.engine.choice import ModelChoice, Precision
from mrcnn_cli.errors import MrcnnError
from mrcnn_cli.io.files import model_file_kind

# In order of preference: the first that runs checkpoints, the first that runs exported graphs.
BACKENDS: dict[str, type[Backend]] = {cls.name: cls for cls in (TorchBackend, OnnxBackend, OpenVinoBackend)}
ALIASES = {'pytorch': 'torch', 'onnxruntime': 'onnx', 'ort': 'onnx', 'ov': 'openvino'}


def backend_named(name: str) -> type[Backend]:
    cls = BACKENDS.get(ALIASES.get(name, name))
    if cls is None:
        raise MrcnnError(f'unknown backend {name!r} (use {", ".join(BACKENDS)})')
    return cls


def backend_for(choice: ModelChoice) -> type[Backend]:
    """The backend a ModelChoice names, or by default the first that runs what it gives (an
    exported graph for `onnx`, else a checkpoint; OpenVINO for an INT8 file)."""
    if choice.backend is not None:
        return backend_named(choice.backend)
    if choice.precision == Precision.INT8 or (choice.onnx is not None and model_file_kind(choice.onnx) == 'openvino'):
        return OpenVinoBackend    # INT8 files are OpenVINO models
    return next(cls for cls in BACKENDS.values() if cls.runs_graph == (choice.onnx is not None))


def load_choice(choice: ModelChoice) -> Backend:
    """The backend for a ModelChoice: its backend checks what it was given, then builds it."""
    cls = backend_for(choice)
    cls.check_choice(choice)
    return cls.from_choice(choice)
