"""The training config a checkpoint carries, read without executing it.

mmdetection 2.x files hold `Config.pretty_text` in `meta['config']`, 3.x (mmengine) files in
`meta['cfg']`: Python source made of assignments of `dict(...)` calls, lists and literals.  It is
parsed with `ast` and only those node kinds are evaluated; anything else reads as unknown.
"""
import ast
from dataclasses import dataclass

from mrcnn_cli.model.spec import Normalization

_UNKNOWN = object()


@dataclass(frozen=True)
class TrainingConfig:
    """What the checkpoint's config says about the backbone and the input normalisation."""
    where: str                      # 'meta.config' (2.x) or 'meta.cfg' (3.x)
    model_type: str | None = None          # e.g. 'MaskRCNN', 'CascadeRCNN'
    backbone_type: str | None = None       # e.g. 'ResNet', 'ResNeXt', 'SwinTransformer'
    style: str | None = None               # 'pytorch' or 'caffe' (mmdetection's ResNet default: pytorch)
    norm: Normalization | None = None


def read_training_config(meta):
    """The TrainingConfig of a checkpoint's meta dict, or None when it carries no readable config."""
    if not isinstance(meta, dict):
        return None
    for key in ('cfg', 'config'):
        text = meta.get(key)
        if isinstance(text, str) and text.strip():
            values = _assignments(text)
            if values is not None:
                return _interpret(values, f'meta.{key}')
    return None


def _assignments(text):
    """Top-level `name = value` of a config's source, values evaluated as literals (or None)."""
    try:
        tree = ast.parse(text)
    except (SyntaxError, ValueError):
        return None
    values = {}
    for stmt in tree.body:
        if isinstance(stmt, ast.Assign) and len(stmt.targets) == 1 and isinstance(stmt.targets[0], ast.Name):
            values[stmt.targets[0].id] = _literal(stmt.value)
    return values


def _literal(node):
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, (ast.List, ast.Tuple)):
        items = [_literal(e) for e in node.elts]
        return tuple(items) if isinstance(node, ast.Tuple) else items
    if isinstance(node, ast.Dict):
        return {_literal(k): _literal(v) for k, v in zip(node.keys, node.values) if k is not None}
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == 'dict' and not node.args:
        return {kw.arg: _literal(kw.value) for kw in node.keywords if kw.arg is not None}
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        value = _literal(node.operand)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return -value if isinstance(node.op, ast.USub) else value
    return _UNKNOWN


def _interpret(values, where):
    model = values.get('model') if isinstance(values.get('model'), dict) else {}
    backbone = model.get('backbone') if isinstance(model.get('backbone'), dict) else {}
    backbone_type = _str(backbone.get('type'))
    style = _str(backbone.get('style'))
    if style is None and backbone_type in ('ResNet', 'ResNeXt', 'ResNetV1d'):
        style = 'pytorch'   # mmdetection's ResNet default
    if style not in (None, 'pytorch', 'caffe'):
        style = None
    return TrainingConfig(where, _str(model.get('type')), backbone_type, style, _normalization(values, model))


def _normalization(values, model):
    """3.x: model.data_preprocessor (bgr_to_rgb); 2.x: img_norm_cfg, else the test pipeline's Normalize."""
    pre = model.get('data_preprocessor')
    if isinstance(pre, dict) and 'mean' in pre:
        return _norm(pre.get('mean'), pre.get('std'), pre.get('bgr_to_rgb', False))
    cfg = values.get('img_norm_cfg')
    if isinstance(cfg, dict) and 'mean' in cfg:
        return _norm(cfg.get('mean'), cfg.get('std'), cfg.get('to_rgb', True))
    data = values.get('data') if isinstance(values.get('data'), dict) else {}
    test = data.get('test') if isinstance(data.get('test'), dict) else {}
    for pipeline in (values.get('test_pipeline'), test.get('pipeline')):
        step = _find_normalize(pipeline)
        if step is not None:
            return _norm(step.get('mean'), step.get('std'), step.get('to_rgb', True))
    return None


def _find_normalize(node):
    if isinstance(node, dict):
        if node.get('type') == 'Normalize':
            return node
        node = list(node.values())
    if isinstance(node, (list, tuple)):
        for item in node:
            found = _find_normalize(item)
            if found is not None:
                return found
    return None


def _norm(mean, std, to_rgb):
    def triple(v):
        ok = isinstance(v, (list, tuple)) and len(v) == 3 and all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
        return tuple(float(x) for x in v) if ok else None
    mean, std = triple(mean), triple(std if std is not None else (1, 1, 1))
    if mean is None or std is None or not isinstance(to_rgb, bool) or 0.0 in std:
        return None
    return Normalization(mean, std, to_rgb)


def _str(v):
    return v if isinstance(v, str) else None
