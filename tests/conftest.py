import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / 'shared'
KEYS = SHARED / 'data' / 'state_dict_keys'
COCO_IMAGES = SHARED / 'data' / 'coco_mini_val2017' / 'val2017'
DEMO = ROOT / 'src' / 'mrcnn_cli' / 'data' / 'demo.jpg'

VARIANTS = {  # variant -> keys file of mmdetection's own model
    'r50': 'mmdet_mask-rcnn_r50_fpn_1x_coco.txt',
    'r50_caffe': 'mmdet_mask-rcnn_r50-caffe_fpn_1x_coco.txt',
    'x101_32x4d': 'mmdet_mask-rcnn_x101-32x4d_fpn_1x_coco.txt',
}


def pytest_configure(config):
    config.addinivalue_line('markers', 'slow: an end-to-end run or a long model run; `pytest -m "not slow"` is the '
                                       'quick loop, `make test` runs everything')


def pytest_collection_modifyitems(config, items):
    """Everything under tests/e2e/ runs the command line end to end: slow, as a folder."""
    e2e = ROOT / 'tests' / 'e2e'
    for item in items:
        if e2e in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.slow)


def pytest_sessionstart(session):
    if not (SHARED / 'tools' / 'make_checkpoint.py').exists():
        raise pytest.UsageError(f'test data not found: {SHARED} must sit beside the project root')
    torch.set_num_threads(2)


def make_checkpoint(keys_file, out, fmt='mmdet3', seed=0):
    subprocess.run([sys.executable, str(SHARED / 'tools' / 'make_checkpoint.py'), str(KEYS / keys_file),
                    str(out), '--seed', str(seed), '--format', fmt], check=True)
    return out


@pytest.fixture(scope='session')
def checkpoint(tmp_path_factory):
    """Synthetic checkpoints with the exact key layout of the real ones, made once per session."""
    made = {}

    def get(variant, fmt='mmdet3'):
        if (variant, fmt) not in made:
            out = tmp_path_factory.mktemp('ckpt') / f'{variant}_{fmt}.pth'
            made[variant, fmt] = make_checkpoint(VARIANTS[variant], out, fmt)
        return made[variant, fmt]
    return get


@pytest.fixture(scope='session')
def torch_predictor(checkpoint):
    from mrcnn_cli import load
    cache = {}

    def get(variant, style=None, model_name=None):
        key = (variant, style, model_name)
        if key not in cache:
            cache[key] = load(model_name, weights=checkpoint(variant), style=style, device='cpu')
        return cache[key]
    return get


@pytest.fixture(scope='session')
def exported(torch_predictor, tmp_path_factory):
    made = {}

    def get(variant, style=None):
        if variant not in made:
            from mrcnn_cli.backends.onnx_export import export_onnx
            out = tmp_path_factory.mktemp('onnx') / f'{variant}.onnx'
            export_onnx(torch_predictor(variant, style), out)
            made[variant] = out
        return made[variant]
    return get


@pytest.fixture(scope='session')
def zoo_weights_dir(checkpoint, tmp_path_factory):
    """A weights folder where the R-50 zoo entry's file is the synthetic checkpoint, already
    recorded as verified (its real bytes cannot be downloaded here; the checksum check itself
    is tested in test_zoo.py)."""
    import json
    import os

    from mrcnn_cli.io import zoo
    entry = zoo.get_entry('mask-rcnn_r50_fpn_1x_coco')
    folder = tmp_path_factory.mktemp('weights')
    dest = folder / entry.filename
    os.symlink(checkpoint('r50'), dest)
    stat = dest.stat()
    (folder / f'.{entry.filename}.verified').write_text(json.dumps(
        {'size': stat.st_size, 'mtime_ns': stat.st_mtime_ns, 'sha256': entry.sha256_prefix + '0' * 56}))
    return folder


@pytest.fixture(scope='session')
def plain_predictor(checkpoint):
    """mrcnn's model as loaded, without the inference rewrites (BatchNorm folding, channels-last):
    the baseline that tells rewrite effects from a CPU's own float rounding."""
    import torch

    from mrcnn_cli.backends.base import Backend
    from mrcnn_cli.backends.pytorch import load_torch_model
    from mrcnn_cli.predictor import Predictor

    class PlainBackend(Backend):
        name = 'plain'

        def __init__(self, model, classes, source):
            super().__init__(model.spec, classes, torch.device('cpu'), source)
            self.model = model

        @torch.inference_mode()
        def run_network(self, batch, img_shapes, stage):
            return self.model(batch, img_shapes, None, stage)

    cache = {}

    def get(variant, style):
        if (variant, style) not in cache:
            loaded = load_torch_model(weights=checkpoint(variant), style=style)
            cache[variant, style] = Predictor(PlainBackend(loaded.model, loaded.classes, loaded.source))
        return cache[variant, style]
    return get
