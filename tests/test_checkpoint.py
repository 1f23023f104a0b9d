"""Safe and strict checkpoint loading."""
import pickle

import pytest
import torch

from mrcnn_cli import MrcnnError
from mrcnn_cli.checkpoint import load_checkpoint, model_from_checkpoint
from mrcnn_cli.coco import COCO_CLASSES
from mrcnn_cli.zoo import get_entry


class _RunsCode:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, 'w'))


def test_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / 'pwned'
    bad = tmp_path / 'evil.pth'
    torch.save({'state_dict': {'w': torch.zeros(1)}, 'meta': _RunsCode(str(marker))}, bad,
               _use_new_zipfile_serialization=True)
    assert not marker.exists()  # saving does not call open; loading unsafely would
    with pytest.raises(MrcnnError, match='could run code'):
        load_checkpoint(bad)
    assert not marker.exists()


def test_legacy_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / 'pwned'
    bad = tmp_path / 'evil.pkl'
    bad.write_bytes(pickle.dumps({'state_dict': _RunsCode(str(marker))}))
    with pytest.raises(MrcnnError):
        load_checkpoint(bad)
    assert not marker.exists()


def test_truncated_and_not_a_checkpoint(tmp_path, checkpoint):
    data = checkpoint('r50').read_bytes()
    cut = tmp_path / 'cut.pth'
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(MrcnnError, match='not a valid'):
        load_checkpoint(cut)
    text = tmp_path / 'notes.pth'
    text.write_text('hello')
    with pytest.raises(MrcnnError, match='not a valid'):
        load_checkpoint(text)
    with pytest.raises(MrcnnError, match='not found'):
        load_checkpoint(tmp_path / 'missing.pth')


def test_mmdet2_and_bare_state_dict(tmp_path, checkpoint):
    ck2 = load_checkpoint(checkpoint('r50', 'mmdet2'))
    assert ck2.classes == COCO_CLASSES and 'backbone.conv1.weight' in ck2.state_dict
    sd = {k: v for k, v in ck2.state_dict.items() if not k.endswith('num_batches_tracked')}
    bare = tmp_path / 'bare.pth'
    torch.save(sd, bare)
    ck = load_checkpoint(bare)
    assert ck.classes is None
    model, classes = model_from_checkpoint(ck)
    assert classes == COCO_CLASSES
    assert torch.equal(model.state_dict()['backbone.conv1.weight'], sd['backbone.conv1.weight'])


def test_wrong_architecture_names_the_problem(tmp_path, checkpoint):
    ck = load_checkpoint(checkpoint('r50'))
    with pytest.raises(MrcnnError, match=r'wrong architecture for X-101-32x4d.*shape mismatches'):
        model_from_checkpoint(ck, spec=get_entry('mask-rcnn_x101-32x4d_fpn_1x_coco').spec)
    with pytest.raises(MrcnnError, match=r'wrong architecture for R-101.*missing keys'):
        model_from_checkpoint(ck, spec=get_entry('mask-rcnn_r101_fpn_1x_coco').spec)
    extra = dict(ck.state_dict, **{'roi_head.extra.weight': torch.zeros(1)})
    with pytest.raises(MrcnnError, match=r'1 unexpected keys \(e.g. roi_head.extra.weight\)'):
        model_from_checkpoint(type(ck)(extra, None, {}))
    missing = {k: v for k, v in ck.state_dict.items() if k != 'rpn_head.rpn_cls.bias'}
    with pytest.raises(MrcnnError, match=r'1 missing keys \(e.g. rpn_head.rpn_cls.bias\)'):
        model_from_checkpoint(type(ck)(missing, None, {}))
    with pytest.raises(MrcnnError, match='not an mmdetection Mask R-CNN'):
        model_from_checkpoint(type(ck)({'fc.weight': torch.zeros(2, 2)}, None, {}))
