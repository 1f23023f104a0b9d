"""Three stages joined by bounded queues: decoding in a reader thread, the network in a model
thread, and the caller consuming results in its own thread (drawing, encoding, writing), so that
no stage waits on another longer than it must and memory stays flat whatever the input length."""
from __future__ import annotations

import contextvars
import queue
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import numpy as np

    from mrcnn_cli.engine.detections import Detections
    from mrcnn_cli.engine.tiling import SceneInfo, TilePart
    from mrcnn_cli.io.video import VideoInfo

_END = object()
_POLL_S = 0.1


@dataclass
class StreamItem:
    """One image or video frame from reader to writer: decoded in the reader thread, given its
    detections in the model thread, consumed by the caller (`Predictor.stream` yields them).

    `source` names the input (its path, URL or camera index as given; `array<i>`, `tensor<i>`,
    `pil<i>`, `bytes<i>` for in-memory inputs, i their position in the list) and `kind` says what
    it is (image, video, camera, stream, array, bytes, url); `source_index` is its position among
    the sources, `frame_index` the frame's number in its video.  Between `vid_stride` steps
    `inferred` is False and `detections` are the last inferred frame's, as `mrcnn predict` draws
    them.  With `errors='yield'` a problem is an item too: `error` (the input could not be read)
    or `warning` (a video read only in part), with `image` and `detections` None.

    An image read with `tile=` comes as one item whose detections are in full-image coordinates and
    whose `scene` says how it was read; `image` is None when it was read by regions (a large TIFF):
    `scene.preview` is then a shrunk copy to draw on."""
    source: str = ''
    kind: str = 'image'
    frame_index: int = 0
    image: np.ndarray | None = None
    detections: Detections | None = None
    inferred: bool = True
    source_index: int = 0
    video: VideoInfo | None = None        # fps, width, height, declared frames of a video's frames
    error: str | None = None
    warning: str | None = None
    scene: SceneInfo | None = None        # how a sliced image was read (tile=)
    tile: TilePart | None = field(default=None, repr=False, compare=False)   # a tile's frame, until merged
    prepared: Any = field(default=None, repr=False, compare=False)   # the reader thread's work, until inferred

    @property
    def ok(self) -> bool:
        return self.error is None and self.warning is None

    @property
    def to_infer(self) -> bool:
        return self.inferred and self.image is not None


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
    """Yield every StreamItem of `frames` (an iterable, consumed in a reader thread), in order,
    with its `detections` set.  `infer(list of images) -> list of detections` runs in a model
    thread on batches of up to `batch_size` frames to infer; with `prepare`, the reader thread
    turns each frame to infer into `prepare(frame)` and `infer` gets those instead; a frame with
    inferred=False gets the detections of the last inferred frame of its source, a problem None.
    An error in the reader or the model is raised here; when the caller stops (break, an exception, Ctrl-C) both threads
    stop, the model thread after its current batch."""
    stop = threading.Event()
    q_in = queue.Queue(maxsize=queue_size)
    q_out = queue.Queue(maxsize=queue_size)

    def reader():
        try:
            for frame in frames:
                if prepare is not None and frame.to_infer:
                    frame.prepared = prepare(frame)
                if not _put(q_in, frame, stop):
                    return
            _put(q_in, _END, stop)
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            _put(q_in, _Failure(e), stop)

    def model():
        pending, last = [], {}

        def flush():
            todo = [f for f in pending if f.to_infer]
            dets = iter(infer([f.image if prepare is None else f.prepared for f in todo]) if todo else [])
            for f in pending:
                if f.image is None:
                    f.detections = None
                elif f.inferred:
                    f.detections = last[f.source_index] = next(dets)
                else:
                    f.detections = last.get(f.source_index)
                f.prepared = None   # not held while the caller works
                if not _put(q_out, f, stop):
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
                n_infer = sum(f.to_infer for f in pending)
                if n_infer >= batch_size or not item.to_infer and n_infer == 0:
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
