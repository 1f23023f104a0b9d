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
from helpers import MjpegServer

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


def numbered_frames(first, count, size=(96, 64)):
    """Frames whose grey level says their number (JPEG keeps a flat level within a step or two)."""
    return [np.full((size[1], size[0], 3), 10 * (first + i), np.uint8) for i in range(count)]


def stream_run(url, **options):
    sources, _ = collect_sources(url)
    items = list(source_items(sources, **options))
    frames = [(f.frame_index, int(round(f.image.mean() / 10))) for f in items if isinstance(f, Frame)]
    problems = [p for p in items if isinstance(p, Problem)]
    assert all((p.note is None) + (p.warning is None) + (p.error is None) == 2 for p in problems)
    return frames, [p.note or p.warning or p.error for p in problems], [p.note is not None for p in problems]


@pytest.fixture
def quick_reconnect(monkeypatch):
    from mrcnn_cli.io import video
    monkeypatch.setattr(video, 'RECONNECT_WAIT_S', 0.05)


def test_a_live_stream_that_drops_is_reopened_and_numbers_skip_the_time_away(quick_reconnect):
    with MjpegServer([numbered_frames(0, 5), numbered_frames(5, 4)]) as server:
        frames, notes, are_notes = stream_run(server.url, reconnect=2)
    first, second = frames[:5], frames[5:]
    assert first == [(i, i) for i in range(5)] and [level for _, level in second] == [5, 6, 7, 8]
    gap = second[0][0]
    assert gap >= 6 and [index for index, _ in second] == list(range(gap, gap + 4))   # away >= 0.05 s at 25 fps
    assert server.opened == 4   # the first, the second, then two refused tries
    assert notes[0] == f'{server.url} dropped after frame 4; reconnecting (up to 2 tries)'
    assert notes[1].startswith(f'{server.url} is back after ') and notes[1].endswith(f'frames 5-{gap - 1} were missed')
    assert notes[2:] == [f'{server.url} dropped after frame {gap + 3}; reconnecting (up to 2 tries)',
                         f'{server.url} did not come back; it ends after frame {gap + 3}']
    assert are_notes == [True] * 4   # news, not warnings: nothing the stream sent was lost


def test_reconnect_0_ends_a_stream_where_it_drops(quick_reconnect):
    with MjpegServer([numbered_frames(0, 3), numbered_frames(3, 3)]) as server:
        frames, notes, _ = stream_run(server.url, reconnect=0)
    assert frames == [(i, i) for i in range(3)] and notes == [] and server.opened == 1


def test_a_stream_that_comes_back_at_another_size_ends_with_one_warning(quick_reconnect):
    with MjpegServer([numbered_frames(0, 3), numbered_frames(3, 3, size=(64, 48))]) as server:
        frames, notes, are_notes = stream_run(server.url, reconnect=3)
    assert frames == [(i, i) for i in range(3)]
    assert notes[1:] == [f'{server.url} came back at 64x48, it was 96x64: it ends here'] and are_notes == [True, False]


def test_a_video_of_known_length_over_http_is_not_reopened_at_its_end(quick_reconnect, tmp_path):
    import functools
    import http.server
    import threading
    writer = cv2.VideoWriter(str(tmp_path / 'clip.avi'), cv2.VideoWriter_fourcc(*'MJPG'), 25, (96, 64))
    for frame in numbered_frames(0, 4):
        writer.write(frame)
    writer.release()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f'http://127.0.0.1:{httpd.server_address[1]}/clip.avi'
        frames, notes, _ = stream_run(url, reconnect=5, max_frames=20)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert frames == [(i, i) for i in range(4)] and notes == []


def test_reconnect_must_be_a_count(inputs):
    with pytest.raises(MrcnnError, match='reconnect must be a number of tries'):
        stream_sources(FakeRunner(), collect_sources(inputs[0])[0], StreamOptions(reconnect=-1))
    with pytest.raises(MrcnnError, match='not True'):
        stream_sources(FakeRunner(), collect_sources(inputs[0])[0], StreamOptions(reconnect=True))


def test_stopping_a_stream_that_waits_to_reconnect_ends_its_reader(monkeypatch):
    """Ctrl-C (or a break) while a dropped stream waits to reconnect: the reader thread gives up
    the wait and has ended when the stream is closed, rather than sleeping through its tries."""
    import threading

    from mrcnn_cli.io import video
    monkeypatch.setattr(video, 'RECONNECT_WAIT_S', 1000.0)
    readers = set(threading.enumerate())   # any other test's
    with MjpegServer([numbered_frames(0, 5)]) as server:
        items = stream_sources(FakeRunner(), collect_sources(server.url)[0], StreamOptions(errors='yield'))
        for item in items:
            if item.note:   # dropped: the reader now waits 1000 s before its first try
                break
        items.close()
    assert item.note.endswith('reconnecting (up to 5 tries)')
    assert not [t for t in set(threading.enumerate()) - readers if t.name == 'mrcnn-reader']
