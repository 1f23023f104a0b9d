"""`mrcnn export --int8`: post-training INT8 quantization of an `mrcnn export` ONNX file with NNCF
for OpenVINO, behind an accuracy guard.  Calibration images go through the model's own
preprocessing; the quantized model is measured against the FP32 one on held-out images and is
written (an OpenVINO IR, .xml beside its .bin) only when the guard passes or is forced."""
from __future__ import annotations

import json
import os
import tempfile
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from mrcnn_cli.backends.onnx_graph import graph_inputs
from mrcnn_cli.engine.compare import AgreementAP, agreement_ap
from mrcnn_cli.engine.preprocess import TEST_SCALE, pad_batch, prepare
from mrcnn_cli.errors import MrcnnError, first_line, option
from mrcnn_cli.io.sources import collect_sources, read_source_image
from mrcnn_cli.model.spec import DEFAULT_SCORE_THR

INSTALL = "INT8 export needs NNCF and OpenVINO: pip install 'mrcnn-cli[int8]'"
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
    import logging
    # importing NNCF looks for a CUDA toolkit through torch, which logs a warning on CPU machines
    cpp_logger = logging.getLogger('torch.utils.cpp_extension')
    level = cpp_logger.level
    cpp_logger.setLevel(logging.ERROR)
    try:
        import nncf  # noqa: F401
        import openvino  # noqa: F401
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
    """The INT8 file's path, which must name an OpenVINO .xml (its weights go to the .bin beside it)."""
    path = Path(path)
    if path.suffix != '.xml':
        raise MrcnnError(f'{option("int8", meta=str(path))}: an INT8 model is an OpenVINO .xml file (its weights '
                         'go to the .bin beside it)')
    return path


def quantize_int8(onnx_path, out_path, images: Int8Images, *, scale: tuple[int, int] = TEST_SCALE,
                  guard: Int8Guard = Int8Guard(), force: bool = False,
                  warn: Callable[[str], None] = print) -> Int8Export:
    """Quantize the FP32 export `onnx_path` with NNCF on `images.calibration`, measure it against
    the FP32 model on `images.check`, both at the test-time `scale` the model will run at, and
    write it to `out_path` (.xml, its .bin beside) when `guard` passes (or with `force`, after one
    warning).  A failed guard is one MrcnnError naming the numbers, and nothing is written."""
    require_nncf()
    import nncf
    import openvino as ov

    from mrcnn_cli.backends.onnx_metadata import parse_metadata
    from mrcnn_cli.backends.openvino import OpenVinoBackend, model_metadata
    from mrcnn_cli.io.images import read_image
    out_path = check_int8_path(out_path)
    start = time.perf_counter()
    model = ov.Core().read_model(str(onnx_path))
    meta = model_metadata(model)
    info = parse_metadata(meta, onnx_path)
    if meta.get('precision', 'fp32') != 'fp32':
        raise MrcnnError(f'{onnx_path}: INT8 quantization starts from an FP32 export, not {meta.get("precision")}')
    dataset = nncf.Dataset(images.calibration, lambda path: calibration_inputs(read_image(path), info.spec.norm, scale))
    try:
        with warnings.catch_warnings():   # numpy's overflow notes from NNCF's statistics, not the user's concern
            warnings.simplefilter('ignore', RuntimeWarning)
            quantized = nncf.quantize(model, dataset, subset_size=len(images.calibration),
                                      preset=nncf.QuantizationPreset.PERFORMANCE)
    except Exception as e:  # noqa: BLE001 - NNCF's boundary: its own and OpenVINO's errors
        raise MrcnnError(f'NNCF could not quantize {onnx_path} ({type(e).__name__}: {first_line(e)})') from None
    calibration = {'images': len(images.calibration), 'first': images.calibration[0].name,
                   'last': images.calibration[-1].name, 'scale': list(scale), 'tool': f'nncf {nncf.__version__}',
                   'preset': 'performance'}
    for key, value in (('precision', 'int8'), ('calibration', json.dumps(calibration))):
        quantized.set_rt_info(value, ['framework', key])
    out_path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_path.parent, prefix='.int8-') as tmp:
        trial = Path(tmp) / out_path.name
        ov.save_model(quantized, str(trial), compress_to_fp16=False)
        # the trial's compiled blob stays in the trial's folder, not in OpenVINO's cache
        measured = measure_agreement(OpenVinoBackend(onnx_path, 'cpu', scale=scale),
                                     OpenVinoBackend(trial, 'cpu', cache_dir=tmp, scale=scale), images.check)
        failures = guard.failures(measured)
        if failures and not force:
            raise MrcnnError(f'INT8 model refused by the accuracy guard: {"; ".join(failures)} (on '
                             f'{measured.images} held-out images; {option("force", True)} writes it anyway)')
        if failures:
            warn(f'warning: the INT8 model fails the accuracy guard ({"; ".join(failures)}); written because of '
                 f'{option("force", True)}')
        record = {**measured.as_dict(), 'passed': not failures,
                  'thresholds': {'box_ap': guard.min_box_ap, 'mask_ap': guard.min_mask_ap, 'found': guard.min_found}}
        quantized.set_rt_info(json.dumps(record), ['framework', 'agreement'])
        ov.save_model(quantized, str(trial), compress_to_fp16=False)
        # the weights first: the .xml, what users name, appears only beside its complete .bin
        os.replace(trial.with_suffix('.bin'), out_path.with_suffix('.bin'))
        os.replace(trial, out_path)
    return Int8Export(out_path, measured, not failures, len(images.calibration), time.perf_counter() - start)


def measure_agreement(reference, other, paths: Sequence[Path], *, score_thr: float = DEFAULT_SCORE_THR) -> AgreementAP:
    """The AgreementAP of two backends of one model on the images at `paths`."""
    from mrcnn_cli.io.images import read_image
    ref, det = [], []
    for path in paths:
        img = read_image(path)
        ref.append(reference.predict_batch([img])[0])
        det.append(other.predict_batch([img])[0])
    try:
        return agreement_ap(ref, det, score_thr=score_thr)
    except ValueError as e:
        raise MrcnnError(f'cannot measure INT8 agreement: {e} (give other check images)') from None
