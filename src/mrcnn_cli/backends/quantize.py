"""`mrcnn export --int8`: post-training INT8 quantization of an `mrcnn export` ONNX file, behind an
accuracy guard: with NNCF into an OpenVINO IR (.xml beside its .bin), or with onnxruntime's static
quantization into a QDQ ONNX file (.onnx, for onnxruntime).  Calibration images
go through the model's own preprocessing; the quantized model is measured against the FP32 one on
held-out images, on the runtime it was made for, and is written only when the guard passes or is
forced."""
from __future__ import annotations

import json
import logging
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mrcnn_cli.backends.onnx_graph import graph_inputs
from mrcnn_cli.backends.onnx_metadata import parse_metadata
from mrcnn_cli.engine.compare import AgreementAP, agreement_ap
from mrcnn_cli.engine.preprocess import TEST_SCALE, pad_batch, prepare
from mrcnn_cli.errors import MrcnnError, first_line, option
from mrcnn_cli.io.images import read_image
from mrcnn_cli.io.sources import collect_sources, read_source_image
from mrcnn_cli.model.spec import DEFAULT_SCORE_THR

INSTALL = "INT8 export needs NNCF and OpenVINO: pip install 'mrcnn-cli[int8]'"
INT8_SUFFIXES = ('.xml', '.onnx')
QDQ_OPS = ('Conv', 'MatMul', 'Gemm')   # what onnxruntime runs as INT8 kernels; the rest stays FP32
MIN_CALIBRATION_IMAGES = 8
MIN_CHECK_IMAGES = 4
DEFAULT_CALIBRATION_IMAGES = 300
DEFAULT_CHECK_IMAGES = 50


@dataclass(frozen=True)
class Int8Guard:
    """The least agreement with the FP32 model an INT8 file may have (docs/int8.md says how these
    were set: what BF16 and FP32 on another backend score on the same check)."""
    min_box_ap: float = 0.90
    min_mask_ap: float = 0.85
    min_found: float = 0.95

    def failures(self, measured: AgreementAP) -> list[str]:
        checks = (('box agreement AP', measured.box_ap, self.min_box_ap),
                  ('mask agreement AP', measured.mask_ap, self.min_mask_ap),
                  ('found', measured.found, self.min_found))
        return [f'{name} {value:.3f} < {least:.2f}' for name, value, least in checks if value < least]


@dataclass(frozen=True)
class Int8Images:
    """The images an INT8 export reads: `calibration` to set the ranges, `check` (held out) for the guard."""
    calibration: tuple[Path, ...]
    check: tuple[Path, ...]
    skipped: int


@dataclass(frozen=True)
class Int8Export:
    path: Path
    agreement: AgreementAP
    passed: bool
    calibration_images: int
    seconds: float


def require_nncf():
    """Import NNCF (and OpenVINO), or one MrcnnError naming the extra to install."""
    # NNCF imports its torch part (when quantizing, to tell which framework a model is from), which
    # imports torch.utils.cpp_extension, whose import logs a warning on machines without CUDA: imported
    # here first with that logger quiet, so that the later imports are no-ops and log nothing
    cpp_logger = logging.getLogger('torch.utils.cpp_extension')
    level = cpp_logger.level
    cpp_logger.setLevel(logging.ERROR)
    try:
        import nncf  # noqa: F401
        import openvino  # noqa: F401
        import torch.utils.cpp_extension  # noqa: F401
    except ImportError:
        raise MrcnnError(INSTALL) from None
    finally:
        cpp_logger.setLevel(level)


def readable_images(sources, limit: int, skip: Sequence[Path], warn: Callable[[str], None]) -> tuple[list[Path], int]:
    """Up to `limit` image files of `sources` (folders, globs, files) that decode, none of `skip`;
    each one that does not decode is one warning.  Returns (paths, how many were skipped)."""
    found, _ = collect_sources(list(sources), images_only=True, warn=warn)
    excluded = {p.resolve() for p in skip}
    paths: list[Path] = []
    skipped = 0
    for src in found:
        if len(paths) == limit:
            break
        path = Path(str(src.location))
        if path.resolve() in excluded:
            continue
        try:   # decoded here to drop what does not decode, and again by NNCF: not all held in memory at once
            read_source_image(src)
        except MrcnnError as e:
            warn(f'warning: {e} (skipped)')
            skipped += 1
            continue
        paths.append(path)
    return paths, skipped


def int8_images(calibration, check=None, *, calibration_n: int = DEFAULT_CALIBRATION_IMAGES,
                check_n: int = DEFAULT_CHECK_IMAGES, warn: Callable[[str], None] = print) -> Int8Images:
    """The calibration and check images: from `check` when given (never a calibration image), else
    the last `check_n` readable images of `calibration`, held out of calibration."""
    if check:
        check_paths, skipped_check = readable_images(check, check_n, (), warn)
        calib_paths, skipped = readable_images(calibration, calibration_n, check_paths, warn)
        skipped += skipped_check
    else:
        paths, skipped = readable_images(calibration, calibration_n + check_n, (), warn)
        held = min(check_n, max(len(paths) - MIN_CALIBRATION_IMAGES, MIN_CHECK_IMAGES))
        calib_paths, check_paths = paths[:len(paths) - held], paths[len(paths) - held:]
    if len(calib_paths) < MIN_CALIBRATION_IMAGES or len(check_paths) < MIN_CHECK_IMAGES:
        where = 'in ' + ', '.join(map(str, calibration)) + (' and ' + ', '.join(map(str, check)) if check else '')
        raise MrcnnError(f'INT8 export needs at least {MIN_CALIBRATION_IMAGES} readable calibration images and '
                         f'{MIN_CHECK_IMAGES} held-out check images; found {len(calib_paths)} and '
                         f'{len(check_paths)} {where}')
    return Int8Images(tuple(calib_paths), tuple(check_paths), skipped)


def calibration_inputs(image: np.ndarray, norm, scale=TEST_SCALE) -> dict[str, np.ndarray]:
    """The exported graph's inputs for one BGR image, prepared and padded as the backends do."""
    p = prepare(image, norm, 'cpu', scale)
    return graph_inputs(pad_batch([p.tensor])[0], p.img_shape)


def check_int8_path(path) -> Path:
    """The INT8 file's path: an OpenVINO .xml (NNCF; its weights go to the .bin beside it) or an
    .onnx (onnxruntime's QDQ quantization)."""
    path = Path(path)
    if path.suffix not in INT8_SUFFIXES:
        raise MrcnnError(f'{option("int8", meta=str(path))}: an INT8 model is an OpenVINO .xml file (NNCF; its '
                         'weights go to the .bin beside it) or an .onnx file (onnxruntime)')
    return path


def quantize_int8(onnx_path, out_path, images: Int8Images, *, scale: tuple[int, int] = TEST_SCALE,
                  guard: Int8Guard = Int8Guard(), force: bool = False,
                  warn: Callable[[str], None] = print) -> Int8Export:
    """Quantize the FP32 export `onnx_path` on `images.calibration` (NNCF for an .xml `out_path`,
    onnxruntime for an .onnx one), measure it against the FP32 model on `images.check` on the
    runtime it is for, both at the test-time `scale` the model will run at, and write it to
    `out_path` when `guard` passes (or with `force`, after one warning).  A failed guard is one
    MrcnnError naming the numbers, and nothing is written."""
    out_path = check_int8_path(out_path)
    start = time.perf_counter()
    quantizer = OpenVinoQuantizer() if out_path.suffix == '.xml' else OnnxRuntimeQuantizer()
    meta = quantizer.read(onnx_path)
    if meta.get('precision', 'fp32') != 'fp32':
        raise MrcnnError(f'{onnx_path}: INT8 quantization starts from an FP32 export, not {meta.get("precision")}')
    info = parse_metadata(meta, onnx_path)
    calibration_set = [lambda path=path: calibration_inputs(read_image(path), info.spec.norm, scale)
                       for path in images.calibration]
    try:
        with warnings.catch_warnings():   # numpy's overflow notes from the statistics, not the user's concern
            warnings.simplefilter('ignore', RuntimeWarning)
            tool = quantizer.quantize(onnx_path, calibration_set)
    except MrcnnError:
        raise
    except Exception as e:  # noqa: BLE001 - the quantizer's boundary: its own and its runtime's errors
        raise MrcnnError(f'{quantizer.tool} could not quantize {onnx_path} ({type(e).__name__}: {first_line(e)})') \
            from None
    calibration = {'images': len(images.calibration), 'first': images.calibration[0].name,
                   'last': images.calibration[-1].name, 'scale': list(scale), **tool}
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix='.int8-') as tmp:
        trial = Path(tmp) / out_path.name
        quantizer.save(trial, {'precision': 'int8', 'calibration': json.dumps(calibration)})
        reference, quantized = quantizer.backends(onnx_path, trial, Path(tmp), scale)
        measured = measure_agreement(reference, quantized, images.check)
        failures = guard.failures(measured)
        if failures and not force:
            raise MrcnnError(f'INT8 model refused by the accuracy guard: {"; ".join(failures)} (on '
                             f'{measured.images} held-out images; {option("force", True)} writes it anyway)')
        if failures:
            warn(f'warning: the INT8 model fails the accuracy guard ({"; ".join(failures)}); written because of '
                 f'{option("force", True)}')
        record = {**measured.as_dict(), 'passed': not failures,
                  'thresholds': {'box_ap': guard.min_box_ap, 'mask_ap': guard.min_mask_ap, 'found': guard.min_found}}
        quantizer.save(trial, {'agreement': json.dumps(record)})
        # the weights first: the .xml, what users name, appears only beside its complete .bin
        for part in quantizer.parts(trial):
            os.replace(part, out_path.with_suffix(part.suffix))
    return Int8Export(out_path, measured, not failures, len(images.calibration), time.perf_counter() - start)


class OpenVinoQuantizer:
    """NNCF's post-training quantization (preset performance) of the export as OpenVINO reads it,
    saved as an OpenVINO IR; its guard runs both models on OpenVINO."""
    tool = 'NNCF'

    def read(self, onnx_path) -> dict[str, str]:
        require_nncf()
        import openvino as ov

        from mrcnn_cli.backends.openvino import model_metadata
        self.model = ov.Core().read_model(str(onnx_path))
        return model_metadata(self.model)

    def quantize(self, onnx_path, calibration_set) -> dict[str, str]:
        import nncf
        dataset = nncf.Dataset(calibration_set, lambda make_inputs: make_inputs())
        self.model = nncf.quantize(self.model, dataset, subset_size=len(calibration_set),
                                   preset=nncf.QuantizationPreset.PERFORMANCE)
        return {'tool': f'nncf {nncf.__version__}', 'preset': 'performance'}

    def save(self, path: Path, entries: dict[str, str]) -> None:
        import openvino as ov
        for key, value in entries.items():
            self.model.set_rt_info(value, ['framework', key])
        ov.save_model(self.model, str(path), compress_to_fp16=False)

    def backends(self, onnx_path, trial: Path, folder: Path, scale):
        from mrcnn_cli.backends.openvino import OpenVinoBackend
        # the trial's compiled blob stays in the trial's folder, not in OpenVINO's cache
        return (OpenVinoBackend(onnx_path, 'cpu', scale=scale),
                OpenVinoBackend(trial, 'cpu', cache_dir=folder, scale=scale))

    def parts(self, trial: Path) -> tuple[Path, ...]:
        return trial.with_suffix('.bin'), trial


class OnnxRuntimeQuantizer:
    """onnxruntime's static quantization into QDQ (per-channel INT8 weights, UINT8 activations, the
    layout its x86 INT8 kernels take) of the convolutions and matrix products, calibrated by
    MinMax over all calibration images (its option to merge ranges every N images drops the
    ranges it clears in onnxruntime 1.31, so it is not used; the ranges it keeps per image are
    reduced in the graph and small); its guard runs both models on onnxruntime's CPU provider."""
    tool = 'onnxruntime'

    def read(self, onnx_path) -> dict[str, str]:
        import onnx
        try:   # only its metadata is kept: quantize_static reads the file itself
            model = onnx.load(str(onnx_path), load_external_data=False)
        except Exception as e:  # noqa: BLE001 - onnx's reader raises its own untyped errors
            raise MrcnnError(f'{onnx_path}: cannot read the ONNX model ({first_line(e)})') from None
        return {p.key: p.value for p in model.metadata_props}

    def quantize(self, onnx_path, calibration_set) -> dict[str, str]:
        import onnx
        import onnxruntime
        from onnxruntime.quantization import (
            CalibrationDataReader,
            CalibrationMethod,
            QuantFormat,
            QuantType,
            quantize_static,
        )

        class Reader(CalibrationDataReader):
            def __init__(self) -> None:
                self.pending = iter(calibration_set)

            def get_next(self):
                make_inputs = next(self.pending, None)
                return None if make_inputs is None else make_inputs()

        root = logging.getLogger()   # the quantizer logs its advice at WARNING on the root logger
        level = root.level
        root.setLevel(logging.ERROR)
        try:
            with tempfile.TemporaryDirectory(prefix='mrcnn-qdq-') as tmp:
                quantized = Path(tmp) / 'int8.onnx'
                quantize_static(str(onnx_path), str(quantized), Reader(), quant_format=QuantFormat.QDQ,
                                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, per_channel=True,
                                op_types_to_quantize=list(QDQ_OPS), calibrate_method=CalibrationMethod.MinMax)
                self.model = onnx.load(str(quantized))
        finally:
            root.setLevel(level)
        return {'tool': f'onnxruntime {onnxruntime.__version__}', 'method': 'QDQ, MinMax, per-channel weights',
                'ops': ','.join(QDQ_OPS)}

    def save(self, path: Path, entries: dict[str, str]) -> None:
        import onnx
        props = {p.key: p.value for p in self.model.metadata_props} | entries
        del self.model.metadata_props[:]
        for key, value in props.items():
            entry = self.model.metadata_props.add()
            entry.key, entry.value = key, value
        onnx.save(self.model, str(path))

    def backends(self, onnx_path, trial: Path, folder: Path, scale):
        from mrcnn_cli.backends.onnx_runtime import OnnxBackend
        return OnnxBackend(onnx_path, 'cpu', scale=scale), OnnxBackend(trial, 'cpu', scale=scale)

    def parts(self, trial: Path) -> tuple[Path, ...]:
        return (trial,)


def measure_agreement(reference, other, paths: Sequence[Path], *, score_thr: float = DEFAULT_SCORE_THR) -> AgreementAP:
    """The AgreementAP of two backends of one model on the images at `paths`."""
    ref, det = [], []
    for path in paths:
        img = read_image(path)
        ref.append(reference.predict_batch([img])[0])
        det.append(other.predict_batch([img])[0])
    try:
        return agreement_ap(ref, det, score_thr=score_thr)
    except ValueError as e:
        raise MrcnnError(f'cannot measure INT8 agreement: {e} (give other check images)') from None
