"""Checkpoints as users have them: every real kind loads with its own architecture and
preprocessing, and nothing in any file ever runs (issue 15)."""
import json
import pickle
import warnings

import numpy as np
import pytest
import torch

from mrcnn_cli import MrcnnError, MrcnnWarning
from mrcnn_cli.backends.pytorch import model_from_checkpoint
from mrcnn_cli.errors import command_line_voice
from mrcnn_cli.io.checkpoint import Placeholder, load_checkpoint, resolve_spec
from mrcnn_cli.io.coco import COCO_CLASSES
from mrcnn_cli.io.zoo import get_entry
from mrcnn_cli.model.spec import CAFFE_NORM, PYTORCH_NORM

from checkpoint_files import (
    RunsCommand,
    config_2x,
    mmdet1_layout,
    mmdet2_published,
    mmengine_training,
    save,
    save_mmengine,
    with_numpy1_names,
)
from conftest import COCO_IMAGES, SHARED


class _OpensAFile:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, 'w'))


@pytest.fixture(scope='module')
def plain(checkpoint):
    """The synthetic weights as a plain file reads them: {'meta': {classes}, 'state_dict': ...}."""
    return {style: load_checkpoint(checkpoint(variant)) for style, variant in (('caffe', 'r50_caffe'),
                                                                              ('pytorch', 'r50'))}


def same_weights(ck, reference):
    assert ck.state_dict.keys() == reference.state_dict.keys()
    assert all(torch.equal(ck.state_dict[k], reference.state_dict[k]) for k in reference.state_dict)
    assert ck.classes == COCO_CLASSES


def spec_and_warnings(ck, **kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always')
        spec = resolve_spec(ck, source='f.pth', **kwargs)
    return spec, [str(w.message) for w in caught if issubclass(w.category, MrcnnWarning)]


USER_FILES = {   # name -> how it was made
    '2020 zoo file, legacy format': lambda plain, d: save(mmdet2_published(plain['caffe'], 'caffe'),
                                                          d / 'a.pth', legacy=True),
    '2.x training file, numpy 1.x meta, legacy': lambda plain, d: with_numpy1_names(save(
        mmdet2_published(plain['caffe'], 'caffe', numpy_meta=True, optimizer=True), d / 'b.pth', legacy=True)),
    '2.x training file, numpy 1.x meta, zip': lambda plain, d: with_numpy1_names(save(
        mmdet2_published(plain['caffe'], 'caffe', numpy_meta=True, optimizer=True), d / 'c.pth')),
    '2.x file, numpy 2 meta': lambda plain, d: save(mmdet2_published(plain['caffe'], 'caffe', numpy_meta=True),
                                                    d / 'd.pth'),
    'mmengine epoch_12.pth (caffe)': lambda plain, d: save_mmengine(mmengine_training(plain['caffe'], 'caffe'),
                                                                    d / 'e.pth'),
    'mmengine epoch_12.pth (pytorch), legacy': lambda plain, d: with_numpy1_names(save_mmengine(
        mmengine_training(plain['pytorch'], 'pytorch'), d / 'f.pth', legacy=True)),
}


@pytest.mark.slow
@pytest.mark.parametrize('kind', USER_FILES)
def test_users_files_load_with_their_own_style_and_weights(kind, plain, tmp_path):
    style = 'pytorch' if '(pytorch)' in kind else 'caffe'
    path = USER_FILES[kind](plain, tmp_path)
    ck = load_checkpoint(path)
    same_weights(ck, plain[style])
    spec, said = spec_and_warnings(ck)
    assert (spec.style, spec.norm) == (style, CAFFE_NORM if style == 'caffe' else PYTORCH_NORM) and not said
    if 'numpy' in kind:
        meta = ck.meta
        assert meta['hook_msgs']['best_score'] == np.float64(0.382) and meta['seed'] == 1234
        assert meta['per_epoch'].dtype == np.float32 and meta['per_epoch'].tolist() == list(range(12))
        assert meta['flags'].tolist() == [True, False] and meta['counts'].dtype == np.int16
        assert meta['fp16'] == np.bool_(True) and meta['n_gpu'].dtype == np.int32
    if 'mmengine' in kind:
        buffer = load_hub(path)['log_scalars']['train/loss']
        assert isinstance(buffer, Placeholder) and buffer.global_name.endswith('history_buffer.HistoryBuffer')
        assert buffer.state['_log_history'].tolist() == [1.2, 0.9]   # its state is kept, nothing is run
        assert ck.placeholders == ('mmengine.logging.history_buffer.HistoryBuffer',)
        assert ck.palette is not None and len(ck.palette) == 80


def load_hub(path):
    from mrcnn_cli.io.checkpoint import _placeholder_class, numpy_globals
    name = 'mmengine.logging.history_buffer.HistoryBuffer'
    with torch.serialization.safe_globals(numpy_globals() + [(_placeholder_class(name), name)]):
        return torch.load(path, weights_only=True)['message_hub']


@pytest.mark.slow
def test_caffe_training_file_gives_the_caffe_models_detections(plain, tmp_path, torch_predictor):
    """The file's config says caffe: with --weights alone it runs as caffe (as mmdetection would)."""
    from mrcnn_cli.backends.pytorch import LoadedModel, TorchBackend
    from mrcnn_cli.io.images import read_image
    from mrcnn_cli.predictor import Predictor

    from matching import assert_matches_reference, from_reference
    path = save(mmdet2_published(plain['caffe'], 'caffe'), tmp_path / 'caffe.pth', legacy=True)
    model, classes = model_from_checkpoint(load_checkpoint(path))
    det = Predictor(TorchBackend(LoadedModel(model, classes, str(path), None), torch.device('cpu')))(
        read_image(COCO_IMAGES / '000000397133.jpg'), score_thr=0)
    ref = json.loads((SHARED / 'data' / 'reference' / 'r50_caffe_fpn__000000397133.json').read_text())
    assert_matches_reference(from_reference(ref['detections']), det)


def test_explicit_options_win_over_the_config_with_one_warning(plain):
    from mrcnn_cli.io.checkpoint import Checkpoint
    from mrcnn_cli.io.training_config import read_training_config
    caffe = Checkpoint(plain['caffe'].state_dict, COCO_CLASSES, {'config': config_2x('caffe')},
                       read_training_config({'config': config_2x('caffe')}))
    spec, said = spec_and_warnings(caffe, style='pytorch')
    assert (spec.style, spec.norm) == ('pytorch', PYTORCH_NORM)
    assert said == ["f.pth: its training config (meta.config) says style='caffe'; using pytorch style as "
                    "style='pytorch' asks"]
    with command_line_voice():   # the command line names its flags
        assert spec_and_warnings(caffe, style='pytorch')[1][0].endswith('using pytorch style as --style pytorch asks')
    spec, said = spec_and_warnings(caffe, spec=get_entry('mask-rcnn_r50_fpn_1x_coco').spec)
    assert spec.style == 'pytorch' and len(said) == 1 and 'as the zoo entry asks' in said[0]
    spec, said = spec_and_warnings(caffe, spec=get_entry('mask-rcnn_r50-caffe_fpn_1x_coco').spec)
    assert (spec.style, spec.norm, said) == ('caffe', CAFFE_NORM, [])
    spec, said = spec_and_warnings(caffe, style='caffe')
    assert (spec.style, spec.norm, said) == ('caffe', CAFFE_NORM, [])
    # no config at all: pytorch style is assumed, and said once
    bare = Checkpoint(plain['caffe'].state_dict)
    spec, said = spec_and_warnings(bare)
    assert spec.style == 'pytorch' and len(said) == 1 and 'assuming pytorch style' in said[0]
    assert "pass style='caffe'" in said[0]
    assert spec_and_warnings(bare, style='caffe')[1] == []


def test_code_in_a_training_file_never_runs(plain, tmp_path):
    marker = tmp_path / 'ran'
    hub = save_mmengine(mmengine_training(plain['caffe'], 'caffe', extra_message_hub=RunsCommand(marker)),
                        tmp_path / 'hub.pth')
    weights = save_mmengine(mmengine_training(plain['caffe'], 'caffe', in_state_dict=RunsCommand(marker)),
                            tmp_path / 'weights.pth')
    for path in (hub, weights):
        with pytest.raises(MrcnnError, match=rf'^refused to load {path}: it contains objects that could run '
                                             r'code \(posix\.system\)$'):
            load_checkpoint(path)
    assert not marker.exists()
    assert RunsCommand(marker).__reduce__()[0].__name__ == 'system'   # the file really names os.system


def test_an_unknown_class_in_place_of_a_tensor_is_refused(plain, tmp_path):
    from checkpoint_files import HistoryBuffer
    sd = dict(plain['caffe'].state_dict, **{'backbone.conv1.weight': HistoryBuffer([1.0])})
    path = save_mmengine({'state_dict': sd}, tmp_path / 'x.pth')
    with pytest.raises(MrcnnError, match=r'could run code \(mmengine.logging.history_buffer.HistoryBuffer in '
                                         r'state_dict\)'):
        load_checkpoint(path)


@pytest.mark.parametrize('legacy', [False, True], ids=['zip', 'legacy'])
def test_pickle_that_would_open_a_file_is_refused(tmp_path, legacy):
    marker = tmp_path / 'pwned'
    bad = save({'state_dict': {'w': torch.zeros(1)}, 'meta': _OpensAFile(str(marker))}, tmp_path / 'evil.pth',
               legacy=legacy)
    with pytest.raises(MrcnnError, match=r'it contains objects that could run code \(io.open\)'):
        load_checkpoint(bad)
    raw = tmp_path / 'evil.pkl'
    raw.write_bytes(pickle.dumps({'state_dict': _OpensAFile(str(marker))}, protocol=2))
    with pytest.raises(MrcnnError, match='could run code'):
        load_checkpoint(raw)
    assert not marker.exists()


def test_files_that_are_not_checkpoints_say_what_they_are(tmp_path, checkpoint, plain):
    data = checkpoint('r50').read_bytes()
    cut = tmp_path / 'cut.pth'
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(MrcnnError, match='not a valid or complete checkpoint'):
        load_checkpoint(cut)
    for name, text, what in (('page.pth', '<!DOCTYPE html>\n<html><head><title>404</title></head></html>',
                              'an HTML page'),
                             ('s3.pth', '<?xml version="1.0"?><Error><Code>AccessDenied</Code></Error>',
                              'an XML document'),
                             ('api.pth', '{"message": "Not Found"}', 'a JSON document')):
        (tmp_path / name).write_text(text)
        with pytest.raises(MrcnnError, match=f'is {what}, not a checkpoint \\(a failed download\\?\\)'):
            load_checkpoint(tmp_path / name)
    (tmp_path / 'notes.pth').write_text('hello')
    with pytest.raises(MrcnnError, match='not a valid'):
        load_checkpoint(tmp_path / 'notes.pth')
    with pytest.raises(MrcnnError, match='not found'):
        load_checkpoint(tmp_path / 'missing.pth')
    old = save(mmdet1_layout(plain['pytorch']), tmp_path / 'v1.pth')
    with pytest.raises(MrcnnError, match='mmdetection 1.x checkpoint .*upgrade_model_version.py'):
        load_checkpoint(old)


def test_other_model_types_name_the_keys_that_show_it(plain):
    from mrcnn_cli.io.checkpoint import Checkpoint
    sd = plain['pytorch'].state_dict
    cascade = {k.replace('roi_head.bbox_head.', 'roi_head.bbox_head.0.'): v for k, v in sd.items()}
    with pytest.raises(MrcnnError, match=r'several box heads \(roi_head.bbox_head.0.*Cascade'):
        model_from_checkpoint(Checkpoint(cascade), style='pytorch')
    swin = {k: v for k, v in sd.items() if not k.startswith('backbone.')}
    swin['backbone.patch_embed.projection.weight'] = torch.zeros(96, 3, 4, 4)
    with pytest.raises(MrcnnError, match=r'backbone is not a ResNet/ResNeXt \(backbone.patch_embed'):
        model_from_checkpoint(Checkpoint(swin), style='pytorch')
    boxes_only = {k: v for k, v in sd.items() if 'mask_head' not in k}
    with pytest.raises(MrcnnError, match='no mask head'):
        model_from_checkpoint(Checkpoint(boxes_only), style='pytorch')


@pytest.mark.slow
def test_mmdet2_and_bare_state_dict(tmp_path, checkpoint):
    ck2 = load_checkpoint(checkpoint('r50', 'mmdet2'))
    assert ck2.classes == COCO_CLASSES and 'backbone.conv1.weight' in ck2.state_dict
    sd = {k: v for k, v in ck2.state_dict.items() if not k.endswith('num_batches_tracked')}
    bare = tmp_path / 'bare.pth'
    torch.save({f'module.{k}': v for k, v in sd.items()}, bare)   # DataParallel's prefix
    ck = load_checkpoint(bare)
    assert ck.classes is None and ck.config is None
    model, classes = model_from_checkpoint(ck, style='pytorch')
    assert classes == COCO_CLASSES
    assert torch.equal(model.state_dict()['backbone.conv1.weight'], sd['backbone.conv1.weight'])
    half = tmp_path / 'half.pth'   # FP16-stored weights are read as FP32
    torch.save({'state_dict': {k: v.half() if v.is_floating_point() else v for k, v in sd.items()}}, half)
    model, _ = model_from_checkpoint(load_checkpoint(half), style='pytorch')
    assert model.state_dict()['backbone.conv1.weight'].dtype == torch.float32


def test_wrong_architecture_names_the_problem(tmp_path, checkpoint):
    ck = load_checkpoint(checkpoint('r50'))
    with pytest.raises(MrcnnError, match=r'wrong architecture for X-101-32x4d.*shape mismatches'):
        model_from_checkpoint(ck, spec=get_entry('mask-rcnn_x101-32x4d_fpn_1x_coco').spec)
    with pytest.raises(MrcnnError, match=r'wrong architecture for R-101.*missing keys'):
        model_from_checkpoint(ck, spec=get_entry('mask-rcnn_r101_fpn_1x_coco').spec)
    extra = dict(ck.state_dict, **{'roi_head.extra.weight': torch.zeros(1)})
    with pytest.raises(MrcnnError, match=r'1 unexpected keys \(e.g. roi_head.extra.weight\)'):
        model_from_checkpoint(type(ck)(extra), style='pytorch')
    missing = {k: v for k, v in ck.state_dict.items() if k != 'rpn_head.rpn_cls.bias'}
    with pytest.raises(MrcnnError, match=r'1 missing keys \(e.g. rpn_head.rpn_cls.bias\)'):
        model_from_checkpoint(type(ck)(missing), style='pytorch')
    with pytest.raises(MrcnnError, match='not an mmdetection Mask R-CNN'):
        model_from_checkpoint(type(ck)({'fc.weight': torch.zeros(2, 2)}), style='pytorch')
