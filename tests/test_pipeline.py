"""The threaded read -> infer -> write pipeline, with a fake model (fast)."""
import threading

import pytest

from mrcnn_cli.pipeline import Frame, run_pipeline


def run(frames, batch_size, fail_at=None):
    batches, written = [], []

    def infer(images):
        batches.append(list(images))
        return [f'det{img}' for img in images]

    def write(frame, det):
        assert threading.current_thread().name == 'mrcnn-writer'
        if frame.index == fail_at:
            raise OSError('disk full')
        written.append((frame.index, det))

    run_pipeline(iter(frames), infer, write, batch_size, queue_size=2)
    return batches, written


@pytest.mark.parametrize('batch_size', [1, 2, 4])
def test_every_frame_in_order_with_stride_reuse(batch_size):
    frames = [Frame(i, i, infer=i % 3 == 0) for i in range(10)]
    batches, written = run(frames, batch_size)
    assert [i for i, _ in written] == list(range(10))
    assert [d for _, d in written] == [f'det{i - i % 3}' for i in range(10)]
    assert [img for b in batches for img in b] == [0, 3, 6, 9]
    assert all(len(b) <= batch_size for b in batches)
    assert max(len(b) for b in batches) == min(batch_size, 4)


def test_unreadable_frames_pass_through_without_inference():
    frames = [Frame(0, 0), Frame(1, None, error='bad'), Frame(2, 2)]
    batches, written = run(frames, 2)
    assert written == [(0, 'det0'), (1, None), (2, 'det2')]
    assert batches == [[0, 2]]


def test_writer_error_stops_the_run():
    with pytest.raises(OSError, match='disk full'):
        run([Frame(i, i) for i in range(50)], 1, fail_at=3)


def test_reader_error_reaches_the_caller():
    def frames():
        yield Frame(0, 0)
        raise ValueError('decoder exploded')

    with pytest.raises(ValueError, match='decoder exploded'):
        run_pipeline(frames(), lambda imgs: imgs, lambda f, d: None, 1)
