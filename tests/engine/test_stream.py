"""engine.stream on its own, with a stand-in for the network: which frames are read, which are
inferred, what each error mode does, and the per-call selection (no model, no checkpoint)."""
import cv2
import numpy as np
import pytest

from mrcnn_cli import Detections, MrcnnError, MrcnnWarning
from mrcnn_cli.engine.detections import Selection
from mrcnn_cli.engine.frames import Frame, Problem
from mrcnn_cli.engine.stream import StreamOptions, source_items, stream_sources
from mrcnn_cli.io.sources import collect_sources
from mrcnn_cli.ops.paste import MaskWindow

from conftest import SHARED

CLIP = SHARED / 'data' / 'video' / 'mmaction2_demo.mp4'
CLASSES = ('person', 'car', 'cat')


class FakeRunner:
    """A Runner, what stream_sources asks of a model: prepare in the reader thread, predict in the model
    thread (and its input scale, for a sliced image's whole-image pass); each image gets a
    detection of every class, scored 0.9, 0.5, 0.2, and is counted."""
    classes = CLASSES
    scale = (1333, 800)

    def __init__(self):
        self.inferred = 0

    def prepare(self, image):
        return image.shape[:2]

    def predict_prepared(self, prepared, stage=None):
        self.inferred += len(prepared)
        out = []
        for h, w in prepared:
            win = MaskWindow(np.ones((2, 2), bool), 0, 0)
            out.append(Detections(np.array([[0, 0, 2, 2]] * 3, np.float32), [0.9, 0.5, 0.2], [0, 1, 2], [win] * 3,
                                  h, w, CLASSES))
        return out


@pytest.fixture
def inputs(tmp_path):
    good = tmp_path / 'good.png'
    cv2.imwrite(str(good), np.full((12, 16, 3), 128, np.uint8))
    (tmp_path / 'broken.jpg').write_bytes(b'\xff\xd8\xff not a jpeg')
    return good, tmp_path / 'broken.jpg'


def test_frames_in_order_with_the_stride_and_problems_as_items(inputs):
    good, broken = inputs
    sources, _ = collect_sources([good, broken, CLIP, np.zeros((4, 5, 3), np.uint8)])
    items = list(source_items(sources, vid_stride=3, max_frames=5))
    assert [(f.source_index, f.frame_index, f.inferred, f.kind) for f in items if isinstance(f, Frame)] == \
        [(0, 0, True, 'image')] + [(2, i, i % 3 == 0, 'video') for i in range(5)] + [(3, 0, True, 'array')]
    (bad,) = [f for f in items if isinstance(f, Problem)]
    assert bad.source == str(broken) and 'not a readable image' in bad.error and bad.warning is None


def test_each_error_mode(inputs):
    good, broken = inputs
    sources, _ = collect_sources([good, broken])
    fake = FakeRunner()
    yielded = list(stream_sources(fake, sources, StreamOptions(errors='yield')))
    assert [i.ok for i in yielded] == [True, False] and yielded[1].detections is None
    with pytest.warns(MrcnnWarning, match='not a readable image'):
        assert [i.source for i in stream_sources(fake, sources)] == [str(good)]
    with pytest.raises(MrcnnError, match='not a readable image'):
        list(stream_sources(fake, sources, StreamOptions(errors='raise')))
    with pytest.raises(MrcnnError, match="errors must be one of 'warn', 'raise', 'yield'"):
        stream_sources(fake, sources, StreamOptions(errors='ignore'))


def test_the_stride_reuses_detections_and_the_selection_applies_once_per_inferred_frame():
    sources, _ = collect_sources([CLIP])
    fake = FakeRunner()
    items = list(stream_sources(fake, sources, StreamOptions(vid_stride=4, max_frames=9, batch_size=2,
                                                             selection=Selection(score_thr=0.4,
                                                                                 classes=['person', 2]))))
    assert fake.inferred == 3 and [i.inferred for i in items] == [i % 4 == 0 for i in range(9)]
    assert items[1].detections is items[0].detections and items[4].detections is not items[0].detections
    assert all(i.detections.class_names == ['person'] for i in items)   # cat's 0.2 is below 0.4
    with pytest.raises(MrcnnError, match="unknown class 'dog'"):
        stream_sources(fake, sources, StreamOptions(selection=Selection(classes='dog')))   # before anything is read
    assert fake.inferred == 3
