"""ONNX Runtime backend: the exported network behind the same Backend interface."""
from __future__ import annotations

import os

from mrcnn_cli.backends.base import resolve_device
from mrcnn_cli.backends.onnx_graph import GraphBackend
from mrcnn_cli.backends.onnx_metadata import check_int8_file, parse_metadata
from mrcnn_cli.engine.choice import ModelChoice, Precision
from mrcnn_cli.engine.preprocess import TEST_SCALE
from mrcnn_cli.errors import MrcnnError, first_line, option
from mrcnn_cli.io.files import model_file_kind

PROVIDERS = {'cuda': 'CUDAExecutionProvider', 'tensorrt': 'TensorrtExecutionProvider',
             'cpu': 'CPUExecutionProvider'}


def session_options(threads=None, device_type='cpu'):
    import onnxruntime as ort
    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    opts.intra_op_num_threads = threads or os.cpu_count() or 1
    opts.inter_op_num_threads = 1
    if device_type == 'cpu':
        # Every image size gets its own planned block under memory patterns, beside the arena's
        # blocks; without them the arena reuses its blocks across sizes: less peak memory, the same
        # speed (docs/performance.md).
        opts.enable_mem_pattern = False
        # The predictor runs torch work (preprocessing, the paste; in video, decoding and
        # encoding threads) beside each run; workers spinning after a run take a core from it.
        # Ops here are large, so waking workers costs little.
        opts.add_session_config_entry('session.intra_op.allow_spinning', '0')
    opts.log_severity_level = 3  # errors only: keep the CLI's output to one line per problem
    return opts


def choose_providers(device, requested=None):
    """CUDA (or TensorRT when asked) where a GPU is in use, CPU otherwise; CPU always last."""
    import onnxruntime as ort
    available = ort.get_available_providers()
    if device.type == 'cpu':
        return ['CPUExecutionProvider']
    wanted = [PROVIDERS[requested]] if requested else []
    wanted += ['CUDAExecutionProvider']
    chosen = [p for p in dict.fromkeys(wanted) if p in available]
    if requested and PROVIDERS[requested] not in available:
        raise MrcnnError(f'onnxruntime has no {PROVIDERS[requested]} here (available: {", ".join(available)})')
    if device.index is not None and 'CUDAExecutionProvider' in chosen:
        chosen[chosen.index('CUDAExecutionProvider')] = ('CUDAExecutionProvider', {'device_id': device.index})
    return chosen + ['CPUExecutionProvider']


class OnnxBackend(GraphBackend):
    """An `mrcnn export` file run by ONNX Runtime (its CUDA or TensorRT provider on a GPU)."""

    name = 'onnx'
    precisions = (Precision.FP32, Precision.INT8)   # FP32 for any export: the graph runs in what it was made in
    takes_provider = True
    describe_template = '{name} backend on onnxruntime {device}'
    precision_hint = ('; the graph runs as exported: `mrcnn export --fp16` makes an FP16 one, `mrcnn export --int8 '
                      'FILE.onnx` an INT8 one')

    @classmethod
    def check_choice(cls, choice: ModelChoice) -> None:
        super().check_choice(choice)
        if choice.onnx is not None and model_file_kind(choice.onnx) == 'openvino':
            raise MrcnnError(f'{choice.onnx} is an OpenVINO model (`mrcnn export --int8` writes one): '
                             f'{option("backend", "openvino")} runs it')

    @classmethod
    def from_choice(cls, choice: ModelChoice) -> OnnxBackend:
        return cls(choice.onnx, choice.device, choice.ort_provider, scale=choice.scale, precision=choice.precision)

    def __init__(self, path, device='auto', provider=None, threads=None, scale=TEST_SCALE, precision='fp32'):
        import onnxruntime as ort
        dev = resolve_device(device)
        try:
            self.session = ort.InferenceSession(str(path), sess_options=session_options(threads, dev.type),
                                                providers=choose_providers(dev, provider))
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own untyped errors
            if not os.path.exists(path):
                raise MrcnnError(f'ONNX file not found: {path}') from None
            raise MrcnnError(f'{path}: cannot load the ONNX model ({first_line(e)})') from None
        try:
            meta = self.session.get_modelmeta().custom_metadata_map
        except Exception as e:  # noqa: BLE001 - e.g. metadata that is not UTF-8
            raise MrcnnError(f'{path}: not an mrcnn ONNX export (unreadable metadata: {first_line(e)})') from None
        info = parse_metadata(meta, path)
        self.providers = self.session.get_providers()
        # its refusals and its slow-CPU warning; the graph runs in what it was exported in (int8 for an INT8 file)
        check_int8_file(meta, path, Precision.of(precision), on_cpu=self.providers[0] == PROVIDERS['cpu'])
        super().__init__(info.spec, info.classes, dev, str(path), meta.get('precision', 'fp32'), info.palette, scale)
        self.metadata = meta

    def run_graph(self, inputs):
        return self.session.run(None, inputs)

    @property
    def execution_device(self) -> str:
        return self.providers[0]
