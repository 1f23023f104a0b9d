"""The threaded read -> infer -> consume pipeline, with a fake model (fast)."""
import threading

import pytest

from mrcnn_cli.engine import frames
from mrcnn_cli.engine.pipeline import pipelined


def Frame(source_index, index=0, image=None, infer=True, error=None):   # noqa: N802 - reads as the item it makes
    if error is not None:
        return frames.Problem('', 'image', source_index, error=error)
    return frames.Frame('', 'video', source_index, image=image, frame_index=index, inferred=infer)


def run(frames, batch_size, fail_at=None):
    batches, written = [], []

    def infer(images):
        assert threading.current_thread().name == 'mrcnn-model'
        batches.append(list(images))
        return [f'det{img}' for img in images]

    for frame in pipelined(iter(frames), infer, batch_size, queue_size=2):
        assert threading.current_thread() is threading.main_thread()   # the caller consumes
        if fail_at is not None and getattr(frame, 'frame_index', None) == fail_at:
            raise OSError('disk full')
        written.append((getattr(frame, 'frame_index', None), getattr(frame, 'detections', None)))
    return batches, written


@pytest.mark.parametrize('batch_size', [1, 2, 4])
def test_every_frame_in_order_with_stride_reuse(batch_size):
    frames = [Frame(0, i, i, infer=i % 3 == 0) for i in range(10)]
    batches, written = run(frames, batch_size)
    assert [i for i, _ in written] == list(range(10))
    assert [d for _, d in written] == [f'det{i - i % 3}' for i in range(10)]
    assert [img for b in batches for img in b] == [0, 3, 6, 9]
    assert all(len(b) <= batch_size for b in batches)
    assert max(len(b) for b in batches) == min(batch_size, 4)


def test_stride_reuse_never_crosses_sources():
    frames = [Frame(0, 0, 'a0'), Frame(0, 1, 'a1', infer=False), Frame(1, 0, 'b0'), Frame(1, 1, 'b1', infer=False)]
    _, written = run(frames, 4)
    assert [d for _, d in written] == ['deta0', 'deta0', 'detb0', 'detb0']


def test_unreadable_frames_pass_through_without_inference():
    frames = [Frame(0, 0, 0), Frame(0, 1, None, error='bad'), Frame(0, 2, 2)]
    batches, written = run(frames, 2)
    assert [d for _, d in written] == ['det0', None, 'det2']
    assert batches == [[0, 2]]


def test_consumer_error_stops_the_run_and_its_threads():
    before = threading.active_count()
    with pytest.raises(OSError, match='disk full'):
        run([Frame(0, i, i) for i in range(50)], 1, fail_at=3)
    assert not [t for t in threading.enumerate() if t.name == 'mrcnn-model']
    assert threading.active_count() <= before + 1   # the reader may still sit in its last put


def test_reader_and_model_errors_reach_the_caller():
    def frames():
        yield Frame(0, 0, 0)
        raise ValueError('decoder exploded')

    with pytest.raises(ValueError, match='decoder exploded'):
        list(pipelined(frames(), lambda imgs: imgs, 1))

    def broken(images):
        raise RuntimeError('out of memory')
    with pytest.raises(RuntimeError, match='out of memory'):
        list(pipelined(iter([Frame(0, 0, 0)]), broken, 1))


def test_prepare_runs_in_the_reader_thread_on_the_frames_to_infer_only():
    prepared_in = []

    def prepare(frame):
        prepared_in.append((frame.image, threading.current_thread().name))
        return f'ready{frame.image}'

    frames = [Frame(0, i, i, infer=i % 2 == 0) for i in range(5)] + [Frame(1, error='unreadable')]
    out = list(pipelined(iter(frames), lambda ready: [f'det-{r}' for r in ready], 2, prepare=prepare))
    assert prepared_in == [(0, 'mrcnn-reader'), (2, 'mrcnn-reader'), (4, 'mrcnn-reader')]
    assert [getattr(f, 'detections', None) for f in out] == ['det-ready0', 'det-ready0', 'det-ready2', 'det-ready2',
                                                             'det-ready4', None]
