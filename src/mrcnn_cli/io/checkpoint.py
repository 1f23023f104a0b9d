"""Checkpoints as users have them, read without ever running anything from the file.

Every file goes through PyTorch's restricted unpickler (`torch.load(weights_only=True)`).  Beside
torch's own allowlist, numpy scalars and arrays are allowed (numpy 1.x and 2.x global names, every
numeric dtype: model-zoo `meta` carries them).  Classes a training run leaves beside the weights
(mmengine's HistoryBuffer in `message_hub`, optimizer or scheduler objects, anything unknown) are
allowlisted as inert `Placeholder`s: they record their arguments and do nothing else.  Refused
outright: any global of a module that reaches the system, and anything but tensors in the weights.
"""
import re
import threading
import zipfile
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch

from mrcnn_cli.errors import MrcnnError, first_line, option, speaking_to_command_line, warn
from mrcnn_cli.io.training_config import TrainingConfig, read_training_config
from mrcnn_cli.model.spec import ModelSpec, default_norm

DEPTH_BY_STAGE3_BLOCKS = {6: 50, 23: 101}
UPGRADE_SCRIPT = "mmdetection's tools/model_converters/upgrade_model_version.py"

# Globals of these modules reach the file system, processes, the network or the interpreter.
SYSTEM_MODULES = {
    'os', 'posix', 'nt', 'sys', 'subprocess', 'builtins', '__builtin__', 'importlib', 'runpy', 'socket',
    'shutil', 'pickle', '_pickle', 'marshal', 'ctypes', 'code', 'codeop', 'pty', 'io', '_io', 'pathlib',
    'tempfile', 'signal', 'multiprocessing', 'threading', '_thread', 'asyncio', 'webbrowser', 'http',
    'urllib', 'ftplib', 'smtplib', 'telnetlib', 'platform', 'glob', 'types', 'operator', 'functools',
    'copyreg', 'inspect', 'pydoc', 'timeit', 'trace', 'pdb', 'bdb', 'zipimport', 'sqlite3', 'select',
    'selectors', 'mmap', 'resource', 'fcntl', 'gc', 'weakref', 'site', 'sysconfig', 'distutils',
    'setuptools', 'pip', 'torch.hub', 'torch.jit', 'torch._ops', 'torch.ops', 'torch.utils.cpp_extension',
    'numpy.lib', 'numpy.testing', 'numpy.distutils', 'numpy.f2py', 'numpy.ctypeslib',
}
_LOAD_LOCK = threading.Lock()   # torch's safe_globals allowlist is a process-wide set


@dataclass
class Checkpoint:
    state_dict: dict
    classes: tuple | None = None
    meta: dict = field(default_factory=dict)
    config: TrainingConfig | None = None       # the training config the file carries, when readable
    palette: tuple | None = None               # a 3.x file's dataset_meta.palette: one RGB triple per class
    placeholders: tuple = ()            # names of the classes read as inert placeholders


class Placeholder:
    """An inert stand-in for a class or function a checkpoint names beside its weights: it keeps
    the arguments and state it was built with and does nothing else."""
    global_name = '?'

    def __new__(cls, *args, **kwargs):
        self = object.__new__(cls)
        self.args, self.kwargs, self.state = args, kwargs, None
        return self

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        self.state = state

    def __repr__(self):
        return f'<placeholder for {self.global_name}>'


def reaches_system(name):
    """True for a global of a module (or submodule) in SYSTEM_MODULES, e.g. 'os.system'."""
    module = name.rsplit('.', 1)[0]
    return any(module == m or module.startswith(m + '.') for m in SYSTEM_MODULES)


def numpy_globals():
    """numpy's scalar and array reconstructors under their numpy 1.x and 2.x names, and every
    numeric dtype class (a pickled dtype is rebuilt by setting its state)."""
    import numpy as np
    try:
        from numpy._core import multiarray
    except ImportError:   # numpy < 2
        from numpy.core import multiarray
    out = [np.ndarray, np.dtype]
    for package in ('numpy.core', 'numpy._core'):
        out += [(multiarray.scalar, f'{package}.multiarray.scalar'),
                (multiarray._reconstruct, f'{package}.multiarray._reconstruct')]
    out += list({type(np.dtype(code)) for code in '?bBhHiIlLqQefdgFDG'})
    return out


GLOBAL_NAME = re.compile(r'[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*')


def _placeholder_class(name):
    return type(name.rsplit('.', 1)[-1], (Placeholder,), {'global_name': name, '__module__': __name__})


def load_checkpoint(path):
    """A Checkpoint from an mmdetection 3.x / 2.x file (published or raw training output, zip or
    legacy format), a detectron2-style `{'model': ...}` wrapper or a bare state dict."""
    path = Path(path)
    if not path.exists():
        raise MrcnnError(f'checkpoint not found: {path}')
    if path.is_dir():
        raise MrcnnError(f'checkpoint is a directory: {path}')
    _check_file_kind(path)
    unknown = _unknown_globals(path)
    dangerous = sorted(g for g in unknown if reaches_system(g))
    if dangerous:
        raise MrcnnError(f'refused to load {path}: it contains objects that could run code ({", ".join(dangerous)})')
    damaged = sorted(g for g in unknown if not GLOBAL_NAME.fullmatch(g))
    if damaged:   # not a name any Python object has: bytes changed in transit
        raise MrcnnError(f'{path}: not a valid or complete checkpoint (damaged object name {damaged[0]!r})')
    placeholders = [(_placeholder_class(g), g) for g in sorted(unknown)]
    try:
        with _LOAD_LOCK, torch.serialization.safe_globals(numpy_globals() + placeholders):
            obj = torch.load(str(path), map_location='cpu', weights_only=True)
    except Exception as e:  # noqa: BLE001 - a corrupt file raises whatever the unpickler hit
        raise MrcnnError(f'{path}: not a valid or complete checkpoint ({first_line(e)})') from None
    return _unwrap(obj, path, tuple(g for _, g in placeholders))


def _check_file_kind(path):
    """A saved web page, a JSON file or other bytes under a .pth name: say what it is instead of
    an unpickler error."""
    with open(path, 'rb') as f:
        head = f.read(512)
    text = head.lstrip(b'\xef\xbb\xbf \t\r\n').lower()
    if text.startswith((b'<!doctype html', b'<html', b'<head', b'<body', b'<!--', b'<?xml', b'<error')):
        kind = 'an XML document' if text.startswith((b'<?xml', b'<error')) else 'an HTML page'
        raise MrcnnError(f'{path} is {kind}, not a checkpoint (a failed download?)')
    if text.startswith((b'{', b'[')):
        raise MrcnnError(f'{path} is a JSON document, not a checkpoint (a failed download?)')
    if not head:
        raise MrcnnError(f'{path}: not a valid or complete checkpoint (empty file)')
    if head.startswith(b'PK\x03\x04') and not _is_zipfile(path):
        raise MrcnnError(f'{path}: not a valid or complete checkpoint (a truncated or damaged zip archive)')
    if not head.startswith((b'PK\x03\x04', b'\x80')):
        raise MrcnnError(f'{path}: not a valid or complete checkpoint (neither a PyTorch zip archive nor a pickle)')


def _is_zipfile(path):
    try:
        return zipfile.is_zipfile(path)
    except Exception:  # noqa: BLE001 - zipfile raises more than it documents on damaged archives
        return False


def _unknown_globals(path):
    """Globals the file's pickle names that torch's restricted unpickler does not allow by itself
    (read statically from the pickle: nothing is built)."""
    from torch._weights_only_unpickler import get_globals_in_pkl
    allowed = {name for g in numpy_globals() for name in ([g[1]] if isinstance(g, tuple) else [])}
    allowed |= {'numpy.ndarray', 'numpy.dtype'}
    try:
        if zipfile.is_zipfile(path):
            found = set(torch.serialization.get_unsafe_globals_in_checkpoint(str(path)))
        else:   # legacy format: pickles of the magic number, protocol, system info, then the object
            from torch._weights_only_unpickler import _get_allowed_globals
            found = set()
            with open(path, 'rb') as f:
                for i in range(4):
                    if i and not f.peek(1):   # a bare pickle, not torch's legacy format
                        break
                    found |= get_globals_in_pkl(f)
            found -= set(_get_allowed_globals())
    except Exception as e:  # noqa: BLE001 - a corrupt file raises whatever the reader hit
        raise MrcnnError(f'{path}: not a valid or complete checkpoint ({first_line(e)})') from None
    return found - allowed


def _unwrap(obj, path, placeholders):
    if not isinstance(obj, dict):
        raise MrcnnError(f'{path}: not a checkpoint (a {type(obj).__name__}, not a dict of tensors)')
    meta = obj.get('meta') if isinstance(obj.get('meta'), dict) else {}
    sd = obj
    for key in ('state_dict', 'model'):  # mmdet/mmengine, then detectron2-like wrappers
        if isinstance(obj.get(key), dict):
            sd = obj[key]
            break
    code = [f'{v.global_name} in state_dict' for v in sd.values() if isinstance(v, Placeholder)]
    if code:
        raise MrcnnError(f'refused to load {path}: it contains objects that could run code ({code[0]})')
    not_tensor = [(k, v) for k, v in sd.items() if not isinstance(v, torch.Tensor)]
    if not sd or not_tensor:
        detail = f' ({not_tensor[0][0]}: {type(not_tensor[0][1]).__name__})' if not_tensor else ''
        raise MrcnnError(f'{path}: no state_dict of tensors found in the checkpoint{detail}')
    sd = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in sd.items()}
    if _is_mmdet1(sd):
        raise MrcnnError(f'{path} is an mmdetection 1.x checkpoint (heads without the roi_head. prefix, '
                         f'background class first): convert it with {UPGRADE_SCRIPT}')
    dataset_meta = meta.get('dataset_meta') if isinstance(meta.get('dataset_meta'), dict) else {}
    classes = dataset_meta.get('classes', meta.get('CLASSES'))
    classes = tuple(classes) if isinstance(classes, (list, tuple)) and all(isinstance(c, str) for c in classes) \
        else None
    return Checkpoint(sd, classes or None, meta, read_training_config(meta), _palette(dataset_meta.get('palette')),
                      placeholders)


def _palette(value):
    try:
        palette = tuple(tuple(int(c) for c in rgb) for rgb in value)
    except (TypeError, ValueError):
        return None
    return palette if palette and all(len(rgb) == 3 and all(0 <= c <= 255 for c in rgb) for rgb in palette) else None


def _is_mmdet1(sd):
    return (any(k.startswith(('bbox_head.', 'mask_head.')) for k in sd)
            and not any(k.startswith('roi_head.') for k in sd))


def foreign_model_reason(sd):
    """Which keys show that a state dict is not a ResNet/ResNeXt-FPN Mask R-CNN (or '')."""
    def first(pattern):
        return next((k for k in sd if re.match(pattern, k)), None)
    key = first(r'roi_head\.bbox_head\.\d+\.')
    if key:
        return f'several box heads ({key}): a cascade model such as Cascade Mask R-CNN or HTC'
    key = first(r'backbone\.') and first(r'backbone\.(?!conv1\.|bn1\.|layer[1-4]\.)')
    if key:
        return f'its backbone is not a ResNet/ResNeXt ({key})'
    key = first(r'neck\.(?!lateral_convs\.|fpn_convs\.)')
    if key:
        return f'its neck is not an FPN ({key})'
    if first(r'roi_head\.bbox_head\.') and not first(r'roi_head\.mask_head\.'):
        return 'no mask head (roi_head.mask_head.*): a box-only detector such as Faster R-CNN'
    if not first(r'roi_head\.'):
        return 'no RoI heads (roi_head.*): not a two-stage Mask R-CNN'
    return ''


def infer_spec(state_dict, style='pytorch'):
    """Depth, groups, width and class count from tensor shapes (style cannot be seen in shapes)."""
    try:
        blocks = {int(k.split('.')[2]) for k in state_dict if k.startswith('backbone.layer3.')}
        depth = DEPTH_BY_STAGE3_BLOCKS[len(blocks)]
        conv2 = state_dict['backbone.layer1.0.conv2.weight']
        width, per_group = conv2.shape[0], conv2.shape[1]
        groups = width // per_group
        num_classes = state_dict['roi_head.bbox_head.fc_cls.weight'].shape[0] - 1
    except (KeyError, IndexError, ValueError, AttributeError):
        reason = foreign_model_reason(state_dict)
        raise MrcnnError('checkpoint is not an mmdetection Mask R-CNN (ResNet/ResNeXt-FPN): '
                         + (reason or 'cannot infer the backbone from its keys')) from None
    return ModelSpec(depth=depth, groups=groups, width_per_group=width // groups, style=style,
                     num_classes=num_classes)


def resolve_spec(ckpt, spec=None, style=None, source='checkpoint'):
    """The architecture and preprocessing for a loaded checkpoint.

    Shapes give depth, groups, width and classes.  Style and normalisation come from, in order:
    `style` (--style), `spec` (a zoo entry, --model), the checkpoint's training config, and last
    the pytorch-style default, which is then announced once.  An explicit choice that disagrees
    with the config wins, with one warning saying what the config said."""
    cfg = ckpt.config
    if spec is None:
        spec = infer_spec(ckpt.state_dict)
        if style is None and cfg is not None and cfg.style is not None:
            spec = replace(spec, style=cfg.style, norm=cfg.norm or default_norm(replace(spec, style=cfg.style)))
        elif style is None:
            warn(f'{source} carries no training config that names its backbone style: assuming pytorch style '
                 f'(ImageNet RGB normalisation); pass {option("style", "caffe")} for a caffe-style checkpoint')
        elif cfg is not None and cfg.norm is not None and cfg.style in (None, style):
            spec = replace(spec, style=style, norm=cfg.norm)
        else:
            spec = replace(spec, style=style, norm=None)
        chosen_by = option('style', style)
    else:
        chosen_by = '--model' if speaking_to_command_line() else 'the zoo entry'
        if style is not None and style != spec.style:
            spec, chosen_by = replace(spec, style=style, norm=None), option('style', style)
        fc_cls = ckpt.state_dict.get('roi_head.bbox_head.fc_cls.weight')
        if isinstance(fc_cls, torch.Tensor) and fc_cls.ndim == 2:
            spec = replace(spec, num_classes=fc_cls.shape[0] - 1)
    if cfg is not None and cfg.style is not None and cfg.style != spec.style:
        warn(f"{source}: its training config ({cfg.where}) says style='{cfg.style}'; using "
             f"{spec.style} style as {chosen_by} asks")
    elif cfg is not None and cfg.norm is not None and cfg.norm != spec.norm:
        warn(f'{source}: its training config ({cfg.where}) normalises with mean {list(cfg.norm.mean)}, '
             f'std {list(cfg.norm.std)}, to_rgb {cfg.norm.to_rgb}; using mean {list(spec.norm.mean)}, '
             f'std {list(spec.norm.std)}, to_rgb {spec.norm.to_rgb} as {chosen_by} asks')
    return spec


def class_names(ckpt, num_classes):
    """The checkpoint's class names when they fit its heads, else COCO's (80 classes) or class_<i>."""
    from mrcnn_cli.io.coco import COCO_CLASSES
    if ckpt.classes is not None and len(ckpt.classes) == num_classes:
        return tuple(ckpt.classes)
    return COCO_CLASSES if num_classes == 80 else tuple(f'class_{i}' for i in range(num_classes))
