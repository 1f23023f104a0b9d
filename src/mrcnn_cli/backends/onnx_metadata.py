"""What an exported ONNX file says about itself (`metadata_props`): one format, written and read here."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from mrcnn_cli.errors import MrcnnError, first_line
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
