"""A three-stage pipeline: read/decode in a thread, the model in the caller's thread,
draw/encode/write in a thread, joined by bounded queues so memory stays flat and no stage
waits on another longer than it must."""
import queue
import threading
from dataclasses import dataclass

_END = object()


@dataclass
class Frame:
    index: int            # position in its source (image number or video frame index)
    image: object         # BGR uint8 array, or None when it could not be read
    infer: bool = True    # False: reuse the last detections (video --vid-stride)
    error: str = ''       # why image is None


class _Failure:
    def __init__(self, exc):
        self.exc = exc


def _put(q, item, stop):
    while not stop.is_set():
        try:
            q.put(item, timeout=0.1)
            return True
        except queue.Full:
            continue
    return False


def run_pipeline(frames, infer, write, batch_size=1, queue_size=8):
    """Feed `frames` (an iterable, consumed in a reader thread) through `infer(list of images)
    -> list of detections` in batches of `batch_size` inferred frames, and hand every frame in
    order to `write(frame, detections)` in a writer thread.  Frames with infer=False get the
    detections of the last inferred frame before them.  Errors in any stage, and Ctrl-C,
    stop all three; frames already handed to the writer are still written."""
    stop = threading.Event()
    q_in = queue.Queue(maxsize=queue_size)
    q_out = queue.Queue(maxsize=queue_size)
    writer_error = []

    def reader():
        try:
            for frame in frames:
                if not _put(q_in, frame, stop):
                    return
            _put(q_in, _END, stop)
        except BaseException as e:  # noqa: BLE001 - handed to the main thread
            _put(q_in, _Failure(e), stop)

    def writer():
        while True:
            item = q_out.get()
            if item is _END:
                return
            if writer_error:
                continue  # drain so the producer never blocks
            try:
                write(*item)
            except BaseException as e:  # noqa: BLE001
                writer_error.append(e)
                stop.set()

    threads = [threading.Thread(target=reader, daemon=True, name='mrcnn-reader'),
               threading.Thread(target=writer, daemon=True, name='mrcnn-writer')]
    for t in threads:
        t.start()
    pending, last = [], None

    def flush():
        nonlocal pending, last
        todo = [f for f in pending if f.infer and f.image is not None]
        dets = iter(infer([f.image for f in todo]) if todo else [])
        for f in pending:
            if f.infer and f.image is not None:
                last = next(dets)
            q_out.put((f, last if f.image is not None else None))
        pending = []

    try:
        while not stop.is_set():
            item = q_in.get()
            if item is _END:
                break
            if isinstance(item, _Failure):
                raise item.exc
            pending.append(item)
            n_infer = sum(f.infer and f.image is not None for f in pending)
            if n_infer >= batch_size or (n_infer == 0 and not (item.infer and item.image is not None)):
                flush()
        if not writer_error:
            flush()
    finally:
        stop.set()
        q_out.put(_END)
        threads[1].join()
    if writer_error:
        raise writer_error[0]
