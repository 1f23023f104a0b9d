"""Safe checkpoint loading: mmdetection 3.x / 2.x files or bare state dicts, checked against the model."""
import pickle
import zipfile
from dataclasses import dataclass, replace

import torch

from mrcnn_cli import MrcnnError
from mrcnn_cli.coco import COCO_CLASSES
from mrcnn_cli.model import ModelSpec, build_model

DEPTH_BY_STAGE3_BLOCKS = {6: 50, 23: 101}


@dataclass
class Checkpoint:
    state_dict: dict
    classes: tuple
    meta: dict


def _safe_globals():
    """The few non-builtin types real model-zoo files carry (numpy scalars in meta)."""
    allowed = []
    try:
        import numpy as np
        allowed += [np.dtype, type(np.dtype('float64')), type(np.dtype('int64'))]
        try:
            from numpy._core.multiarray import scalar
        except ImportError:  # numpy < 2
            from numpy.core.multiarray import scalar
        allowed.append(scalar)
    except ImportError:
        pass
    return allowed


def load_checkpoint(path):
    """Read a checkpoint with torch.load(weights_only=True): no code in the file can run."""
    try:
        with torch.serialization.safe_globals(_safe_globals()):
            obj = torch.load(str(path), map_location='cpu', weights_only=True)
    except FileNotFoundError:
        raise MrcnnError(f'checkpoint not found: {path}') from None
    except IsADirectoryError:
        raise MrcnnError(f'checkpoint is a directory: {path}') from None
    except pickle.UnpicklingError as e:
        detail = _unpickler_detail(e)
        if 'global' in detail.lower():
            raise MrcnnError(f'{path}: refused to load, the file contains objects that could run code '
                             f'({detail})') from None
        raise MrcnnError(f'{path}: not a valid checkpoint ({detail})') from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise MrcnnError(f'{path}: not a valid or complete checkpoint ({first})') from None
    return _unwrap(obj, path)


def _unpickler_detail(e):
    """The one informative line of torch's weights_only error, e.g. 'Unsupported global: GLOBAL io.open'."""
    text = str(e)
    if 'WeightsUnpickler error:' in text:
        rest = text.split('WeightsUnpickler error:', 1)[1].strip()
        line = rest.splitlines()[0].strip() if rest else ''
        return line.split(' was not an allowed global')[0] or 'unpickling refused'
    return text.strip().splitlines()[0] if text.strip() else 'unpickling failed'


def _unwrap(obj, path):
    if not isinstance(obj, dict):
        raise MrcnnError(f'{path}: not a checkpoint (a {type(obj).__name__}, not a dict of tensors)')
    meta = obj.get('meta') if isinstance(obj.get('meta'), dict) else {}
    sd = obj
    for key in ('state_dict', 'model'):  # mmdet/mmengine, then detectron2-like wrappers
        if isinstance(obj.get(key), dict):
            sd = obj[key]
            break
    if not isinstance(sd, dict) or not sd or not all(isinstance(v, torch.Tensor) for v in sd.values()):
        raise MrcnnError(f'{path}: no state_dict of tensors found in the checkpoint')
    sd = {k[len('module.'):] if k.startswith('module.') else k: v for k, v in sd.items()}
    classes = None
    if isinstance(meta.get('dataset_meta'), dict):
        classes = meta['dataset_meta'].get('classes')
    if classes is None:
        classes = meta.get('CLASSES')
    return Checkpoint(sd, tuple(classes) if classes else None, meta)


def infer_spec(state_dict, style='pytorch'):
    """Depth, groups, width and class count from tensor shapes (style cannot be seen in shapes)."""
    try:
        blocks = {int(k.split('.')[2]) for k in state_dict if k.startswith('backbone.layer3.')}
        depth = DEPTH_BY_STAGE3_BLOCKS[len(blocks)]
        conv2 = state_dict['backbone.layer1.0.conv2.weight']
        width, per_group = conv2.shape[0], conv2.shape[1]
        groups = width // per_group
        num_classes = state_dict['roi_head.bbox_head.fc_cls.weight'].shape[0] - 1
    except (KeyError, IndexError, ValueError):
        raise MrcnnError('checkpoint is not an mmdetection Mask R-CNN (ResNet/ResNeXt-FPN): '
                         'cannot infer the backbone from its keys') from None
    return ModelSpec(depth=depth, groups=groups, width_per_group=width // groups, style=style,
                     num_classes=num_classes)


def check_state_dict(model, state_dict, source):
    """One clear line naming what does not fit: missing or unexpected keys, wrong shapes."""
    expected = {k: v.shape for k, v in model.state_dict().items() if not k.endswith('num_batches_tracked')}
    given = {k: v for k, v in state_dict.items() if not k.endswith('num_batches_tracked')}
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    wrong = sorted(k for k in set(expected) & set(given) if tuple(given[k].shape) != tuple(expected[k]))
    problems = []
    if missing:
        problems.append(f'{len(missing)} missing keys (e.g. {missing[0]})')
    if unexpected:
        problems.append(f'{len(unexpected)} unexpected keys (e.g. {unexpected[0]})')
    if wrong:
        k = wrong[0]
        problems.append(f'{len(wrong)} shape mismatches (e.g. {k}: checkpoint {tuple(given[k].shape)}, '
                        f'model {tuple(expected[k])})')
    if problems:
        raise MrcnnError(f'{source}: wrong architecture for {model.spec.backbone_name} '
                         f'{model.spec.style} Mask R-CNN: ' + '; '.join(problems))


def model_from_checkpoint(ckpt, spec=None, style=None, source='checkpoint'):
    """Build the model for a loaded checkpoint.  `spec` (a zoo entry) wins over inference;
    otherwise the architecture comes from shapes and `style` (default pytorch)."""
    if spec is None:
        spec = infer_spec(ckpt.state_dict, style or 'pytorch')
    elif style is not None and style != spec.style:
        spec = replace(spec, style=style, norm=None)
    n_cls = ckpt.state_dict.get('roi_head.bbox_head.fc_cls.weight')
    if n_cls is not None and n_cls.ndim == 2 and n_cls.shape[0] - 1 != spec.num_classes:
        spec = replace(spec, num_classes=n_cls.shape[0] - 1)
    model = build_model(spec)
    check_state_dict(model, ckpt.state_dict, source)
    sd = {k: v.float() if v.is_floating_point() else v for k, v in ckpt.state_dict.items()}
    model = build_model(spec, sd)
    classes = ckpt.classes
    if classes is None or len(classes) != spec.num_classes:
        classes = COCO_CLASSES if spec.num_classes == 80 else tuple(f'class_{i}' for i in range(spec.num_classes))
    return model, tuple(classes)
