"""What an exported ONNX file says about itself (`metadata_props`): one format, written and read here."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from mrcnn_cli.engine.choice import Precision
from mrcnn_cli.errors import MrcnnError, first_line, option, warn
from mrcnn_cli.io import cpu
from mrcnn_cli.model.spec import ModelSpec, Normalization
from mrcnn_cli.version import __version__


def model_metadata(spec, classes, source, source_sha256=None, precision='fp32', opset=None, palette=None):
    """The metadata_props an `mrcnn export` file carries: enough to predict with it alone."""
    meta = {
        'mrcnn_version': __version__,
        'classes': json.dumps(list(classes)),
        'depth': str(spec.depth), 'groups': str(spec.groups), 'width_per_group': str(spec.width_per_group),
        'style': spec.style, 'num_classes': str(spec.num_classes),
        'mean': json.dumps(list(spec.norm.mean)), 'std': json.dumps(list(spec.norm.std)),
        'to_rgb': str(spec.norm.to_rgb).lower(),
        'source_checkpoint': Path(source).name,
        'source_sha256': source_sha256 or '',
        'precision': precision,
    }
    if opset is not None:
        meta['opset'] = str(opset)
    if palette:
        meta['palette'] = json.dumps([list(p) for p in palette])
    return meta


@dataclass(frozen=True)
class GraphInfo:
    """What an exported file says of the model in it."""
    spec: ModelSpec
    classes: tuple[str, ...]
    palette: tuple[tuple[int, int, int], ...] | None


def parse_metadata(meta: dict[str, str], path) -> GraphInfo:
    """The GraphInfo of a file's metadata_props, or one MrcnnError line."""
    try:
        norm = Normalization(tuple(json.loads(meta['mean'])), tuple(json.loads(meta['std'])),
                             meta['to_rgb'] == 'true')
        spec = ModelSpec(depth=int(meta['depth']), groups=int(meta['groups']),
                         width_per_group=int(meta['width_per_group']), style=meta['style'],
                         num_classes=int(meta['num_classes']), norm=norm)
        palette = (tuple((int(p[0]), int(p[1]), int(p[2])) for p in json.loads(meta['palette']))
                   if 'palette' in meta else None)
        return GraphInfo(spec, tuple(json.loads(meta['classes'])), palette)
    except (KeyError, ValueError, TypeError, IndexError, RecursionError) as e:
        raise MrcnnError(f'{path}: not an mrcnn ONNX export (metadata {first_line(e)} missing or invalid)') from None


def check_int8_file(meta: dict[str, str], path, precision: Precision, *, on_cpu: bool) -> Precision:
    """An INT8 file (`mrcnn export --int8`) runs as it was quantized (its floating-point parts in
    FP32) and only in the mrcnn version that wrote it; `precision` int8 needs one.  Returns the
    precision the file runs in; on a CPU without INT8 dot-product units, one warning."""
    made_in = meta.get('precision', 'fp32')
    if made_in != Precision.INT8:
        if precision == Precision.INT8:
            raise MrcnnError(f'{option("precision", "int8")} runs an INT8 file from `mrcnn export --int8`; {path} '
                             f'is an {made_in} export')
        return precision
    if precision not in (Precision.FP32, Precision.INT8):
        raise MrcnnError(f'{path} is an INT8 model: it runs in int8 (its other parts in FP32), not '
                         f'{option("precision", str(precision))}')
    if meta.get('mrcnn_version') != __version__:
        raise MrcnnError(f'{path} was quantized by mrcnn {meta.get("mrcnn_version") or "(unknown)"}, this is mrcnn '
                         f'{__version__}: export it again with this version')
    if on_cpu and cpu.cpu_has_int8_dot_product() is False:
        warn('this CPU has no INT8 dot-product units (VNNI, AMX): INT8 runs slowly here; '
             '--precision bf16 or fp32 on the FP32 export is faster')
    return Precision.INT8


def int8_agreement(meta: dict[str, str]) -> dict | None:
    """An INT8 file's accuracy guard, as its export measured it (None for other files)."""
    text = meta.get('agreement') if meta.get('precision') == Precision.INT8 else None
    return json.loads(text) if text else None
