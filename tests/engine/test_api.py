"""The Python API as a user calls it (issue 16): load, call, predict, stream, Detections."""
import contextlib
import io
import json

import cv2
import numpy as np
import pytest
import torch

import mrcnn_cli
from mrcnn_cli import Detections, MrcnnError

from conftest import COCO_IMAGES, SHARED
from helpers import FAST, FAST_SCALE, mrcnn

STREET = COCO_IMAGES / '000000397133.jpg'
CLIP = SHARED / 'data' / 'video' / 'mmaction2_demo.mp4'


@pytest.fixture(scope='module')
def model(zoo_weights_dir, checkpoint):
    """A zoo name with local weights: that entry's architecture and preprocessing."""
    return mrcnn_cli.load('mask-rcnn_r50_fpn_1x_coco', weights=checkpoint('r50'), device='cpu', scale=FAST_SCALE)


def same(a, b):
    return (len(a) == len(b) and np.array_equal(a.boxes, b.boxes) and np.array_equal(a.scores, b.scores)
            and np.array_equal(a.labels, b.labels) and np.array_equal(a.masks, b.masks))


def test_public_names():
    assert sorted(mrcnn_cli.__all__) == sorted(['Detections', 'MaskTracker', 'ModelChoice', 'MrcnnError',
                                                'MrcnnWarning', 'Precision', 'Predictor', 'StreamItem', 'TileOptions',
                                                'TrackOptions', 'load', 'save_tracks', 'tune_cpu_allocator',
                                                '__version__'])
    for name in mrcnn_cli.__all__:
        assert getattr(mrcnn_cli, name) is not None


def test_zoo_name_alone_uses_the_weights_folder(zoo_weights_dir, monkeypatch):
    monkeypatch.setenv('MRCNN_WEIGHTS_DIR', str(zoo_weights_dir))
    m = mrcnn_cli.load('mask-rcnn_r50_fpn_1x_coco', device='cpu')
    assert m.source.endswith('mask_rcnn_r50_fpn_1x_coco_20200205-d4b0c5d6.pth') and m.classes[0] == 'person'
    with pytest.raises(MrcnnError, match="unknown model 'nope'"):
        mrcnn_cli.load('nope')
    with pytest.raises(TypeError):
        mrcnn_cli.load('mask-rcnn_r50_fpn_1x_coco', 'cpu')   # options are keyword-only


@pytest.mark.slow
def test_path_array_and_list_give_the_same_detections(model):
    by_path = model(str(STREET))
    assert isinstance(by_path, Detections) and len(by_path) > 0
    assert same(by_path, model(cv2.imread(str(STREET))))
    a, b = model.predict([STREET, cv2.imread(str(COCO_IMAGES / '000000516916.jpg'))], batch_size=2)
    assert same(a, by_path) and len(b) > 0
    with pytest.raises(MrcnnError, match='missing.jpg'):
        model.predict([STREET, COCO_IMAGES / 'missing.jpg'])
    with pytest.raises(MrcnnError, match=r'is a video: predict gives one Detections per image; use stream\(\)'):
        model.predict([STREET, CLIP])


def test_detections_index_filter_serialise_and_draw(model):
    from pycocotools.coco import COCO
    det = model(STREET, score_thr=0)
    assert det.boxes.dtype == np.float32 and det.scores.dtype == np.float32 and det.labels.dtype == np.int64
    assert det.boxes.shape == (len(det), 4) and (np.diff(det.scores) <= 0).all()
    assert det.class_names == [model.classes[i] for i in det.labels]
    assert det.masks.shape == (len(det), det.height, det.width) and det.masks.dtype == bool
    assert np.array_equal(det.mask(3), det.masks[3])
    one = det[0]
    assert isinstance(one, Detections) and len(one) == 1 and one.scores[0] == det.scores[0]
    assert np.array_equal(det[-1].boxes, det.boxes[-1:])
    high = det[det.scores > 0.5]
    assert len(high) == int((det.scores > 0.5).sum()) and (high.scores > 0.5).all()
    assert np.array_equal(det[[2, 0]].labels, det.labels[[2, 0]])
    assert len(det[:10]) == min(10, len(det))
    two = sorted(set(det.class_names))[:2]
    some = det.filter(score_thr=float(det.scores[5]), classes=two)
    assert set(some.class_names) <= set(two) and (some.scores >= det.scores[5]).all() and len(some) > 0
    assert len(some) == sum(c in two for c in det[:6].class_names)
    with pytest.raises(MrcnnError, match="unknown class 'unicorn'"):
        det.filter(classes=['unicorn'])
    with pytest.raises(IndexError):
        det[len(det)]
    entries = det.to_coco(image_id=397133)
    assert len(entries) == len(det) and isinstance(entries[0]['segmentation']['counts'], str)
    gt = COCO(str(SHARED / 'data' / 'coco_mini_val2017' / 'annotations' / 'instances_val2017.json'))
    with contextlib.redirect_stdout(io.StringIO()):
        loaded = gt.loadRes(entries)
    assert len(loaded.anns) == len(det)
    assert {a['category_id'] for a in entries} <= set(gt.getCatIds())
    image = cv2.imread(str(STREET))
    drawn = det.plot(image)
    assert drawn.shape == image.shape and drawn.dtype == np.uint8 and not np.array_equal(drawn, image)
    assert np.array_equal(image, cv2.imread(str(STREET)))   # the caller's image is not drawn on
    assert np.array_equal(det.plot(image, masks=False, boxes=False, labels=False, conf=False), image)
    with pytest.raises(MrcnnError, match='detections are for'):
        det.plot(image[:10])


@pytest.mark.slow
def test_call_equals_what_mrcnn_predict_writes(model, checkpoint, tmp_path):
    proc = mrcnn('predict', STREET, '--model', 'mask-rcnn_r50_fpn_1x_coco', '--weights', checkpoint('r50'), *FAST,
                 '--device', 'cpu', '--score-thr', '0.05', '--no-vis', '--out', tmp_path)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((tmp_path / 'predictions.json').read_text())
    written = [{k: v for k, v in a.items() if k not in ('id', 'iscrowd')} for a in doc['annotations']]
    assert written and written == model(STREET, score_thr=0.05).to_coco(image_id=doc['images'][0]['id'])


@pytest.mark.slow
def test_stream_a_real_clip_with_stride(model):
    items = list(model.stream(str(CLIP), vid_stride=3, max_frames=7))
    assert [i.frame_index for i in items] == list(range(7))
    assert [i.inferred for i in items] == [i % 3 == 0 for i in range(7)]
    assert all(i.source == str(CLIP) and i.kind == 'video' and i.image.shape == (256, 340, 3) for i in items)
    assert items[1].detections is items[0].detections and items[3].detections is not items[0].detections
    assert same(items[3].detections, model(items[3].image))
    cap = cv2.VideoCapture(str(CLIP))
    assert (items[0].video.fps, items[0].video.width) == (cap.get(cv2.CAP_PROP_FPS), 340)
    # images and problems: warn and skip by default, yield when asked
    with pytest.warns(mrcnn_cli.MrcnnWarning, match='no such file'):
        kept = list(model.stream([STREET, 'missing.jpg']))
    assert [i.source for i in kept] == [str(STREET)]
    with pytest.warns(mrcnn_cli.MrcnnWarning, match='not a readable image'):
        assert list(model.stream([COCO_IMAGES.parent / 'annotations' / 'instances_val2017_tiny8.json'])) == []
    # a live stream's reconnection is a per-call option of stream and track, checked before anything is read
    for method in (model.stream, model.track):
        with pytest.raises(mrcnn_cli.MrcnnError, match='reconnect must be a number of tries'):
            method('rtsp://127.0.0.1:9/live', reconnect=-1)


@pytest.mark.slow
def test_two_predictors_from_one_model_and_the_model_is_unchanged(checkpoint):
    from mrcnn_cli.backends.pytorch import TorchBackend, load_torch_model
    from mrcnn_cli.predictor import Predictor
    got = load_torch_model(weights=checkpoint('r50'), style='pytorch')
    loaded = got.model
    before = {k: v.clone() for k, v in loaded.state_dict().items()}
    first = Predictor(TorchBackend(got, 'cpu'))
    second = Predictor(TorchBackend(got, 'cpu'))
    img = cv2.imread(str(STREET))
    assert same(first(img, score_thr=0), second(img, score_thr=0)) and len(first(img, score_thr=0)) > 0
    after = loaded.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in loaded.modules())   # not folded
    assert not loaded.roi_head.bbox_head.channels_last_input
    assert loaded.backbone.conv1.weight.is_contiguous()   # not made channels-last


@pytest.mark.slow
def test_importing_and_predicting_leave_process_settings_alone(checkpoint):
    """Thread counts, dynamo/inductor config and the allocator (see test_memory) stay as they were."""
    import subprocess
    import sys
    probe = f'''
import torch, torch._inductor.config as ic, torch._dynamo.config as dc
before = (torch.get_num_threads(), torch.get_num_interop_threads(), ic.freezing, dc.recompile_limit)
import mrcnn_cli, cv2
m = mrcnn_cli.load(weights={str(checkpoint('r50'))!r}, style='pytorch', device='cpu')
m(cv2.imread({str(STREET)!r}))
after = (torch.get_num_threads(), torch.get_num_interop_threads(), ic.freezing, dc.recompile_limit)
print(before == after, before, after)
'''
    out = subprocess.run([sys.executable, '-c', probe], capture_output=True, text=True, check=True).stdout
    assert out.startswith('True'), out


def test_load_takes_keywords_or_one_model_choice_and_they_are_the_same_options(checkpoint):
    """`load`'s keyword options are ModelChoice's fields (typed by LoadOptions), and a ModelChoice
    loads the same predictor its keywords would."""
    import dataclasses
    import typing

    from mrcnn_cli.api import LoadOptions
    assert set(typing.get_type_hints(LoadOptions)) | {'name'} == {f.name for f in dataclasses.fields(
        mrcnn_cli.ModelChoice)}
    choice = mrcnn_cli.ModelChoice(weights=checkpoint('r50'), style='pytorch', device='cpu', scale=FAST_SCALE)
    by_choice = mrcnn_cli.load(choice)
    by_keywords = mrcnn_cli.load(weights=checkpoint('r50'), style='pytorch', device='cpu', scale=FAST_SCALE)
    assert by_choice.describe() == by_keywords.describe() and by_choice.precision == 'fp32'
    with pytest.raises(TypeError):
        mrcnn_cli.load(weights=checkpoint('r50'), colour='red')
    with pytest.raises(MrcnnError, match='pass a ModelChoice alone'):
        mrcnn_cli.load(choice, device='cpu')
    with pytest.raises(MrcnnError, match="unknown precision 'fp8'"):
        mrcnn_cli.load(weights=checkpoint('r50'), precision='fp8')


def test_load_takes_the_scale_as_its_own_message_suggests_and_refuses_a_bad_style_with_one_line(checkpoint):
    import mrcnn_cli
    from mrcnn_cli import MrcnnError
    model = mrcnn_cli.load(weights=checkpoint('r50'), style='pytorch', device='cpu', scale='800,600')
    assert model.scale == (800, 600)
    with pytest.raises(MrcnnError, match=r'give two sizes, long and short \(1333,800\)'):
        mrcnn_cli.load(weights=checkpoint('r50'), scale='800')
    with pytest.raises(MrcnnError, match="style='cafe': the backbone style is 'pytorch' or 'caffe'"):
        mrcnn_cli.load(weights=checkpoint('r50'), style='cafe')


def test_one_default_threshold_for_the_api_the_command_line_drawing_and_serving():
    import inspect

    from mrcnn_cli.commands.cli import cli
    from mrcnn_cli.commands.predict import PredictOptions
    from mrcnn_cli.engine.detections import Detections
    from mrcnn_cli.predictor import Predictor
    from mrcnn_cli.serve.options import ServeOptions
    defaults = {inspect.signature(Predictor.__call__).parameters['score_thr'].default,
                inspect.signature(Predictor.predict).parameters['score_thr'].default,
                inspect.signature(Detections.plot).parameters['score_thr'].default,
                next(p.default for p in cli.commands['predict'].params if p.name == 'score_thr'),
                next(p.default for p in cli.commands['serve'].params if p.name == 'score_thr'),
                PredictOptions().score_thr, ServeOptions().score_thr}
    assert defaults == {0.3}
