"""OpenVINO backend: the same ONNX file `mrcnn export` writes, compiled by OpenVINO (Intel CPUs,
GPUs and NPUs; BF16 on CPUs that have it), or the INT8 model `mrcnn export --int8` writes (an
OpenVINO IR, .xml beside its .bin), behind the same Backend interface."""
from __future__ import annotations

import functools
import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from mrcnn_cli.backends.onnx_graph import GraphBackend
from mrcnn_cli.backends.onnx_metadata import check_int8_file, parse_metadata
from mrcnn_cli.engine.choice import ModelChoice, Precision
from mrcnn_cli.engine.preprocess import TEST_SCALE
from mrcnn_cli.errors import MrcnnError, first_line, option
from mrcnn_cli.io.files import file_sha256

DEVICES = {'auto': 'AUTO', 'cpu': 'CPU', 'gpu': 'GPU', 'npu': 'NPU'}
HINTS = {'fp32': 'f32', 'bf16': 'bf16', 'fp16': 'f16'}
INSTALL = "the OpenVINO backend needs the openvino package: pip install 'mrcnn-cli[openvino]'"


def openvino_available():
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def default_cache_dir():
    return Path(os.environ.get('XDG_CACHE_HOME', Path.home() / '.cache')) / 'mrcnn' / 'openvino'


def ov_device(device):
    """--device auto|cpu|gpu|npu (or OpenVINO's own names, e.g. GPU.1) -> OpenVINO's name."""
    name = str(device or 'cpu')
    if name.lower() in DEVICES:
        return DEVICES[name.lower()]
    if name.split('.')[0] in DEVICES.values():
        return name
    raise MrcnnError(f'{option("device", name)} is not an OpenVINO device (use cpu, gpu, npu or auto)')


def compile_config(target, precision='fp32', threads=None):
    """compile_model's settings: --fp32/--bf16/--fp16 as the inference precision hint, one request
    at a time (latency), all cores of a CPU."""
    config = {'INFERENCE_PRECISION_HINT': HINTS[precision], 'PERFORMANCE_HINT': 'LATENCY'}
    if target == 'CPU':
        config['INFERENCE_NUM_THREADS'] = threads or os.cpu_count() or 1
    return config


def check_precision(core, target, precision):
    """--bf16/--fp16 only where the device computes in it (OpenVINO would quietly run FP32).  AUTO
    is checked on the devices it chose, once compiled."""
    if precision == 'fp32' or target == 'AUTO':
        return
    caps = device_capabilities(core, target)
    if caps is not None and precision.upper() not in caps:
        raise MrcnnError(f'{option("precision", precision)} needs {precision.upper()} support on OpenVINO {target} '
                         f'(it has {", ".join(caps)})')


def device_capabilities(core, target):
    """What OpenVINO says `target` computes in ('FP32', 'BF16', ...), or None for a device it does
    not have (compile_model then says so)."""
    try:
        return list(core.get_property(target, 'OPTIMIZATION_CAPABILITIES'))
    except Exception:  # noqa: BLE001 - a device OpenVINO does not have
        return None


def model_metadata(model) -> dict[str, str]:
    """What an `mrcnn export` file says of itself, as OpenVINO reads it (an ONNX file's
    metadata_props, an IR's rt_info) from a read ov.Model."""
    framework = model.get_rt_info()['framework'] if model.has_rt_info(['framework']) else {}
    return {k: v.astype(str) for k, v in framework.items()}


def cpu_runs_bf16():
    """Whether OpenVINO's CPU plugin computes in BF16 on this machine (AVX512-BF16, AMX)."""
    import openvino as ov
    return 'BF16' in (device_capabilities(ov.Core(), 'CPU') or [])


class OpenVinoBackend(GraphBackend):
    """An `mrcnn export` file compiled by OpenVINO (Intel CPUs, GPUs and NPUs), BF16/FP16 as hints."""

    name = 'openvino'
    precisions = (Precision.FP32, Precision.BF16, Precision.FP16, Precision.INT8)
    describe_template = 'OpenVINO on {device}'

    @classmethod
    def from_choice(cls, choice: ModelChoice) -> OpenVinoBackend:
        return cls(choice.onnx, choice.device, choice.precision, scale=choice.scale)

    @classmethod
    def available(cls) -> bool:
        return openvino_available()

    @classmethod
    def device_for(cls, device: str) -> str:
        return device if str(device).lower() in DEVICES else 'cpu'   # CUDA is not OpenVINO's

    @classmethod
    def bench_precisions(cls, requested: Precision, device: str) -> tuple[Precision, ...]:
        return (Precision.FP32, Precision.BF16) if cpu_runs_bf16() else (Precision.FP32,)

    @classmethod
    def bench_note(cls, device: str) -> str | None:
        if device != 'cpu' or cpu_runs_bf16():
            return None
        return 'warning: no openvino bf16 row: OpenVINO computes BF16 only on CPUs that have it (AVX512-BF16 or AMX)'

    @property
    def execution_device(self) -> str:
        return self.ov_device

    def __init__(self, path, device='cpu', precision='fp32', threads=None, cache_dir=None, scale=TEST_SCALE):
        try:
            import openvino as ov
        except ImportError:
            raise MrcnnError(INSTALL) from None
        target = ov_device(device)
        core = ov.Core()
        if not os.path.exists(path):
            raise MrcnnError(f'ONNX file not found: {path}')
        try:   # the reader's boundary: whatever OpenVINO raises on this file
            model = core.read_model(str(path))
            meta = model_metadata(model)
        except Exception as e:  # noqa: BLE001
            raise MrcnnError(f'{path}: cannot load the ONNX model in OpenVINO ({first_line(e)})') from None
        info = parse_metadata(meta, path)
        precision = check_int8_file(meta, path, Precision.of(precision), on_cpu=target == 'CPU')
        # INT8 files hold their own quantization: their other parts run in FP32, as the guard measured them
        hint = Precision.FP32 if precision == Precision.INT8 else precision
        check_precision(core, target, hint)
        config = compile_config(target, hint, threads)
        cache = Path(cache_dir) if cache_dir else default_cache_dir()
        try:
            cache.mkdir(parents=True, exist_ok=True)
            core.set_property({'CACHE_DIR': str(cache)})   # compiled blobs reused by the next run
        except OSError:
            pass   # no cache: every run compiles
        try:
            self.compiled_model = core.compile_model(model, target, config)
        except Exception as e:  # noqa: BLE001 - a device that is not there, a plugin that refuses the graph
            raise MrcnnError(f'OpenVINO cannot compile {path} for {target} ({first_line(e)})') from None
        self.request = self.compiled_model.create_infer_request()
        try:   # what AUTO (or a device list) chose
            self.ov_device = ','.join(self.compiled_model.get_property('EXECUTION_DEVICES')) or target
        except Exception:  # noqa: BLE001 - a plugin without the property
            self.ov_device = target
        if target == 'AUTO':   # the precision on the devices AUTO chose: never a quiet FP32 run called BF16
            for chosen in self.ov_device.split(','):
                check_precision(core, chosen.strip(), precision)
        super().__init__(info.spec, info.classes, torch.device('cpu'), str(path), precision, info.palette, scale)
        self.metadata = meta

    @functools.cached_property
    def weights_sha256(self) -> str | None:
        """An OpenVINO model's weights are in the .bin beside its .xml: both are hashed."""
        xml = Path(self.source)
        if xml.suffix != '.xml':
            return super().weights_sha256
        digest = hashlib.sha256()
        for part in (xml, xml.with_suffix('.bin')):
            digest.update(file_sha256(part).encode())
        return digest.hexdigest()

    def run_graph(self, inputs):
        outs = self.request.infer(inputs)
        return [np.array(outs[o]) for o in self.compiled_model.outputs]   # copies: the request reuses its buffers
