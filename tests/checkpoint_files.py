"""Checkpoint files as users have them on disk, built the way the tools that wrote them did.

- mmdetection 2.x (mmcv 1.x `save_checkpoint`): `{'meta', 'state_dict', 'optimizer'}`, meta with
  `config` (`Config.pretty_text`), `CLASSES`, `hook_msgs`; files published in 2020 were written by
  PyTorch < 1.6 in the legacy (non-zip) format.
- numpy 1.x pickles: the same pickle opcodes under numpy 1.x's module names
  (`numpy.core.multiarray.scalar` / `_reconstruct`), which numpy 2 renamed to `numpy._core`.
- mmdetection 3.x (mmengine `Runner.save_checkpoint`): `meta.cfg`, `meta.dataset_meta`,
  `message_hub` holding `mmengine.logging.history_buffer.HistoryBuffer` objects, `optimizer`,
  `param_schedulers`.
"""
import collections
import sys
import types
import zipfile
from pathlib import Path

import numpy as np
import torch

from mrcnn_cli.io.coco import COCO_CLASSES

CAFFE_NORM_2X = "img_norm_cfg = dict(\n    mean=[103.53, 116.28, 123.675], std=[1.0, 1.0, 1.0], to_rgb=False)\n"
PYTORCH_NORM_2X = ("img_norm_cfg = dict(\n    mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], "
                   "to_rgb=True)\n")


def config_2x(style):
    """mmcv 1.x `Config.pretty_text` of mask_rcnn_r50[_caffe]_fpn_1x_coco.py (abridged where it
    does not matter: heads, train settings), as mmdetection 2.x's tools/train.py stored it."""
    norm = CAFFE_NORM_2X if style == 'caffe' else PYTORCH_NORM_2X
    mean, std, to_rgb = (('[103.53, 116.28, 123.675]', '[1.0, 1.0, 1.0]', 'False') if style == 'caffe' else
                         ('[123.675, 116.28, 103.53]', '[58.395, 57.12, 57.375]', 'True'))
    pretrained = 'open-mmlab://detectron2/resnet50_caffe' if style == 'caffe' else 'torchvision://resnet50'
    return f"""model = dict(
    type='MaskRCNN',
    pretrained='{pretrained}',
    backbone=dict(
        type='ResNet',
        depth=50,
        num_stages=4,
        out_indices=(0, 1, 2, 3),
        frozen_stages=1,
        norm_cfg=dict(type='BN', requires_grad={style != 'caffe'}),
        norm_eval=True,
        style='{style}'),
    neck=dict(
        type='FPN',
        in_channels=[256, 512, 1024, 2048],
        out_channels=256,
        num_outs=5),
    rpn_head=dict(
        type='RPNHead',
        in_channels=256,
        feat_channels=256,
        anchor_generator=dict(
            type='AnchorGenerator',
            scales=[8],
            ratios=[0.5, 1.0, 2.0],
            strides=[4, 8, 16, 32, 64])),
    test_cfg=dict(
        rpn=dict(nms_pre=1000, max_per_img=1000, nms=dict(type='nms', iou_threshold=0.7), min_bbox_size=0),
        rcnn=dict(score_thr=0.05, nms=dict(type='nms', iou_threshold=0.5), max_per_img=100, mask_thr_binary=0.5)))
dataset_type = 'CocoDataset'
data_root = 'data/coco/'
{norm}train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', img_scale=(1333, 800), keep_ratio=True),
    dict(type='RandomFlip', flip_ratio=0.5),
    dict(
        type='Normalize',
        mean={mean},
        std={std},
        to_rgb={to_rgb}),
    dict(type='Pad', size_divisor=32),
    dict(type='DefaultFormatBundle'),
    dict(type='Collect', keys=['img', 'gt_bboxes', 'gt_labels', 'gt_masks'])
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(
        type='MultiScaleFlipAug',
        img_scale=(1333, 800),
        flip=False,
        transforms=[
            dict(type='Resize', keep_ratio=True),
            dict(type='RandomFlip'),
            dict(
                type='Normalize',
                mean={mean},
                std={std},
                to_rgb={to_rgb}),
            dict(type='Pad', size_divisor=32),
            dict(type='ImageToTensor', keys=['img']),
            dict(type='Collect', keys=['img'])
        ])
]
optimizer = dict(type='SGD', lr=0.02, momentum=0.9, weight_decay=0.0001)
lr_config = dict(policy='step', warmup='linear', warmup_iters=500, warmup_ratio=0.001, step=[8, 11])
total_epochs = 12
work_dir = './work_dirs/mask_rcnn_r50_{style}_fpn_1x_coco'
gpu_ids = range(0, 8)
"""


def config_3x(style):
    """mmengine `Config.pretty_text` of mask-rcnn_r50[-caffe]_fpn_1x_coco.py (abridged), as
    mmengine's Runner stores it in meta['cfg']."""
    mean, std, rgb = (('[103.53, 116.28, 123.675]', '[1.0, 1.0, 1.0]', 'False') if style == 'caffe' else
                      ('[123.675, 116.28, 103.53]', '[58.395, 57.12, 57.375]', 'True'))
    return f"""auto_scale_lr = dict(base_batch_size=16, enable=False)
backend_args = None
data_root = 'data/coco/'
dataset_type = 'CocoDataset'
default_scope = 'mmdet'
model = dict(
    backbone=dict(
        depth=50,
        frozen_stages=1,
        init_cfg=dict(checkpoint='open-mmlab://detectron2/resnet50_caffe', type='Pretrained'),
        norm_cfg=dict(requires_grad=False, type='BN'),
        norm_eval=True,
        num_stages=4,
        out_indices=(
            0,
            1,
            2,
            3,
        ),
        style='{style}',
        type='ResNet'),
    data_preprocessor=dict(
        bgr_to_rgb={rgb},
        mean={mean},
        pad_mask=True,
        pad_size_divisor=32,
        std={std},
        type='DetDataPreprocessor'),
    neck=dict(
        in_channels=[
            256,
            512,
            1024,
            2048,
        ], num_outs=5, out_channels=256, type='FPN'),
    test_cfg=dict(
        rcnn=dict(mask_thr_binary=0.5, max_per_img=100, nms=dict(iou_threshold=0.5, type='nms'), score_thr=0.05),
        rpn=dict(max_per_img=1000, min_bbox_size=0, nms=dict(iou_threshold=0.7, type='nms'), nms_pre=1000)),
    type='MaskRCNN')
optim_wrapper = dict(
    optimizer=dict(lr=0.02, momentum=0.9, type='SGD', weight_decay=0.0001),
    type='OptimWrapper')
test_pipeline = [
    dict(backend_args=None, type='LoadImageFromFile'),
    dict(keep_ratio=True, scale=(
        1333,
        800,
    ), type='Resize'),
    dict(type='PackDetInputs', meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_cfg = dict(max_epochs=12, type='EpochBasedTrainLoop', val_interval=1)
work_dir = './work_dirs/mask-rcnn_r50-{style}_fpn_1x_coco'
"""


def save(obj, path, legacy=False):
    torch.save(obj, str(path), _use_new_zipfile_serialization=not legacy)
    return Path(path)


def with_numpy1_names(path):
    """Rewrite a saved file's pickle as numpy 1.x wrote it: numpy 2's `numpy._core` module names
    back to `numpy.core` (GLOBAL opcodes are newline-terminated text, so lengths may change)."""
    path = Path(path)

    def rename(pkl):
        return pkl.replace(b'cnumpy._core.multiarray\n', b'cnumpy.core.multiarray\n')
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as z:
            items = [(info, z.read(info.filename)) for info in z.infolist()]
        with zipfile.ZipFile(path, 'w', zipfile.ZIP_STORED) as z:
            for info, data in items:
                z.writestr(info, rename(data) if info.filename.endswith('/data.pkl') else data)
    else:
        path.write_bytes(rename(path.read_bytes()))
    assert b'numpy._core' not in path.read_bytes()
    return path


def mmdet2_published(plain, style, numpy_meta=False, optimizer=False):
    """A 2.x file: meta as mmdetection 2.x's train_detector and mmcv's save_checkpoint wrote it."""
    meta = {'mmdet_version': '2.0.0+8fc0542', 'mmcv_version': '0.5.1', 'config': config_2x(style),
            'CLASSES': COCO_CLASSES, 'epoch': 12, 'iter': 87960, 'time': 'Tue May  5 00:39:07 2020',
            'env_info': 'sys.platform: linux\nPython: 3.7.6', 'seed': None,
            'exp_name': f'mask_rcnn_r50_{style}_fpn_1x_coco.py', 'hook_msgs': {'last_ckpt': 'epoch_12.pth'}}
    if numpy_meta:   # what 2021-2023 training runs logged: numpy scalars and arrays
        meta['hook_msgs'].update(best_score=np.float64(0.382), best_ckpt='best_bbox_mAP_epoch_12.pth')
        meta.update(seed=np.int64(1234), gpu_score=np.float32(0.5), n_gpu=np.int32(8), fp16=np.bool_(True),
                    per_epoch=np.arange(12, dtype=np.float32), flags=np.array([True, False]),
                    counts=np.array([[1, 2], [3, 4]], dtype=np.int16))
    ckpt = {'meta': meta, 'state_dict': collections.OrderedDict(plain.state_dict)}
    if optimizer:
        ckpt['optimizer'] = sgd_state(plain.state_dict)
    return ckpt


def sgd_state(state_dict):
    params = [k for k, v in state_dict.items() if v.is_floating_point()][:4]
    return {'state': {i: {'momentum_buffer': torch.zeros_like(state_dict[k])} for i, k in enumerate(params)},
            'param_groups': [{'lr': 0.02, 'momentum': 0.9, 'dampening': 0, 'weight_decay': 0.0001,
                              'nesterov': False, 'maximize': False, 'foreach': None, 'params': list(range(4))}]}


class _FakeModules:
    """Make `module.Class` importable while a file is pickled (pickle checks a class by its
    module path), as if mmengine were installed; removed afterwards."""

    def __init__(self, module, **attrs):
        self.module, self.attrs, self.added = module, attrs, []

    def __enter__(self):
        parts = self.module.split('.')
        for i in range(1, len(parts) + 1):
            name = '.'.join(parts[:i])
            if name not in sys.modules:
                sys.modules[name] = types.ModuleType(name)
                self.added.append(name)
        for k, v in self.attrs.items():
            v.__module__ = self.module
            setattr(sys.modules[self.module], k, v)
        return self

    def __exit__(self, *exc):
        for name in self.added:
            del sys.modules[name]


class HistoryBuffer:
    """mmengine.logging.history_buffer.HistoryBuffer's pickled form: a plain object whose
    __dict__ holds numpy arrays of logged values and counts."""

    def __init__(self, values):
        self.max_length = 1000000
        self._log_history = np.asarray(values, dtype=np.float64)
        self._count_history = np.ones(len(values), dtype=np.float64)


def mmengine_training(plain, style, extra_message_hub=None, in_state_dict=None):
    """A raw mmdetection 3.x training checkpoint (work_dirs/.../epoch_12.pth)."""
    from mrcnn_cli.visualize import class_color
    palette = [class_color(i)[::-1] for i in range(80)]
    meta = {'cfg': config_3x(style), 'seed': 42, 'experiment_name': f'mask-rcnn_r50-{style}_fpn_1x_coco_20231011',
            'time': '20231011_101509', 'mmengine_version': '0.10.3', 'epoch': 12, 'iter': 87960,
            'dataset_meta': {'classes': COCO_CLASSES, 'palette': palette}}
    sd = collections.OrderedDict(plain.state_dict)
    if in_state_dict is not None:
        sd['backbone.conv1.weight'] = in_state_dict
    with _FakeModules('mmengine.logging.history_buffer', HistoryBuffer=HistoryBuffer):
        log_scalars = collections.OrderedDict(
            (k, HistoryBuffer(v)) for k, v in (('train/lr', [0.02, 0.02]), ('train/loss', [1.2, 0.9]),
                                               ('coco/bbox_mAP', [0.38])))
        hub = {'log_scalars': log_scalars,
               'runtime_info': collections.OrderedDict(epoch=12, iter=87960, max_epochs=12, max_iters=87960,
                                                       dataset_meta=meta['dataset_meta']),
               'resumed_keys': collections.OrderedDict(epoch=True, iter=True)}
        if extra_message_hub is not None:
            hub['runtime_info']['extra'] = extra_message_hub
        return {'meta': meta, 'state_dict': sd, 'message_hub': hub, 'optimizer': sgd_state(plain.state_dict),
                'param_schedulers': [{'start_factor': 0.001, 'end_factor': 1.0, 'begin': 0, 'end': 500,
                                      'last_step': 500, 'by_epoch': False, '_get_lr_called_within_step': False,
                                      'base_values': [0.02], '_last_value': [0.02]}]}


def save_mmengine(obj, path, legacy=False):
    """torch.save of a training checkpoint while its classes are importable (as in a training run)."""
    with _FakeModules('mmengine.logging.history_buffer', HistoryBuffer=HistoryBuffer):
        return save(obj, path, legacy)


class RunsCommand:
    """An object whose unpickling would call os.system: what a malicious file carries."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return (os.system, (f'touch {self.marker}',))


def mmdet1_layout(plain):
    """mmdetection 1.x's key layout: heads at the top level, background class FIRST."""
    out = {}
    for k, v in plain.state_dict.items():
        if k.startswith('roi_head.'):
            k = k[len('roi_head.'):]
            if k.startswith('bbox_head.fc_cls.'):
                v = torch.cat([v[-1:], v[:-1]])
            elif k.startswith('bbox_head.fc_reg.'):
                v = torch.cat([v.new_zeros(4, *v.shape[1:]), v])
            elif k.startswith('mask_head.conv_logits.'):
                v = torch.cat([v.new_zeros(1, *v.shape[1:]), v])
        out[k] = v
    return {'meta': {'mmdet_version': '1.0rc0+d3ca926', 'config': 'model = dict(...)'}, 'state_dict': out}
