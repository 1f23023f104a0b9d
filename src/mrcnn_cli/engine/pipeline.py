"""Three stages joined by bounded queues: decoding in a reader thread, the network in a model
thread, and the caller consuming results in its own thread (drawing, encoding, writing), so that
no stage waits on another longer than it must and memory stays flat whatever the input length."""
import contextvars
import queue
import threading
from dataclasses import dataclass

_END = object()
_POLL_S = 0.1


@dataclass
class Frame:
    """One decoded input (or a problem with one) on its way through the pipeline."""
    source_index: int          # position of its source in the input list
    index: int = 0             # frame number in a video, 0 for an image
    image: object = None       # BGR uint8 array; None for a problem
    infer: bool = True         # False: reuse the last detections of its source (video stride)
    error: str = None          # the source or image could not be read at all
    warning: str = None        # the source was read only in part (a truncated video, bad frames)
    video: object = None       # VideoInfo for video frames
    prepared: object = None    # the image made ready for the network, in the reader thread


class _Failure:
    def __init__(self, exc):
        self.exc = exc


def _put(q, item, stop):
    while not stop.is_set():
        try:
            q.put(item, timeout=_POLL_S)
            return True
        except queue.Full:
            continue
    return False


def _get(q, stop):
    while not stop.is_set():
        try:
            return q.get(timeout=_POLL_S)
        except queue.Empty:
            continue
    return _END


def pipelined(frames, infer, batch_size=1, queue_size=8, prepare=None):
    """Yield (frame, detections) for every Frame of `frames` (an iterable, consumed in a reader
    thread), in order.  `infer(list of images) -> list of detections` runs in a model thread on
    batches of up to `batch_size` frames to infer; with `prepare`, the reader thread turns each
    image to infer into `prepare(image)` and `infer` gets those instead; a frame with infer=False gets the detections
    of the last inferred frame of its source, a problem frame None.  An error in the reader or
    the model is raised here; when the caller stops (break, an exception, Ctrl-C) both threads
    stop, the model thread after its current batch."""
    stop = threading.Event()
    q_in = queue.Queue(maxsize=queue_size)
    q_out = queue.Queue(maxsize=queue_size)

    def reader():
        try:
            for frame in frames:
                if prepare is not None and frame.infer and frame.image is not None:
                    frame.prepared = prepare(frame.image)
                if not _put(q_in, frame, stop):
                    return
            _put(q_in, _END, stop)
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            _put(q_in, _Failure(e), stop)

    def model():
        pending, last = [], {}

        def flush():
            todo = [f for f in pending if f.infer and f.image is not None]
            dets = iter(infer([f.image if prepare is None else f.prepared for f in todo]) if todo else [])
            for f in pending:
                if f.image is None:
                    det = None
                elif f.infer:
                    det = last[f.source_index] = next(dets)
                else:
                    det = last.get(f.source_index)
                f.prepared = None   # not held while the caller works
                if not _put(q_out, (f, det), stop):
                    return False
            pending.clear()
            return True

        try:
            while True:
                item = _get(q_in, stop)
                if item is _END:
                    if flush():
                        _put(q_out, _END, stop)
                    return
                if isinstance(item, _Failure):
                    _put(q_out, item, stop)
                    return
                pending.append(item)
                n_infer = sum(f.infer and f.image is not None for f in pending)
                if n_infer >= batch_size or not (item.infer and item.image is not None) and n_infer == 0:
                    if not flush():
                        return
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            _put(q_out, _Failure(e), stop)

    # each thread runs in a copy of the caller's context (how messages name options, see errors.option)
    threads = [threading.Thread(target=contextvars.copy_context().run, args=(reader,), daemon=True,
                                name='mrcnn-reader'),
               threading.Thread(target=contextvars.copy_context().run, args=(model,), daemon=True,
                                name='mrcnn-model')]
    for t in threads:
        t.start()
    try:
        while True:
            item = _get(q_out, stop)
            if item is _END:
                return
            if isinstance(item, _Failure):
                raise item.exc
            yield item
    finally:
        stop.set()
        threads[1].join(timeout=60)   # at most the batch in flight
