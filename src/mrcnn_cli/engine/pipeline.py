"""Three stages: decoding in a reader thread, the network in the batching engine's model thread, and
the caller consuming results in its own thread (drawing, encoding, writing), so that no stage waits
on another longer than it must.  The engine's bounded queue holds the reader back, so memory stays
flat whatever the input length."""
from __future__ import annotations

import contextvars
import queue
import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mrcnn_cli.engine.batching import BatchEngine, EngineClosed
from mrcnn_cli.engine.frames import Frame, Item

if TYPE_CHECKING:
    import numpy as np

    from mrcnn_cli.engine.detections import Detections
    from mrcnn_cli.engine.tiling import SceneInfo
    from mrcnn_cli.io.video import VideoInfo

_END = object()
_POLL_S = 0.1
_READER_JOIN_S = 60.0   # a reader stuck in a read (a camera, a URL) is not waited on for ever


@dataclass
class StreamItem:
    """One image or video frame as `Predictor.stream` yields it, with its detections.

    `source` names the input (its path, URL or camera index as given; `array<i>`, `tensor<i>`,
    `pil<i>`, `bytes<i>` for in-memory inputs, i their position in the list) and `kind` says what
    it is (image, video, camera, stream, array, bytes, url); `source_index` is its position among
    the sources, `frame_index` the frame's number in its video.  Between `vid_stride` steps
    `inferred` is False and `detections` are the last inferred frame's, as `mrcnn predict` draws
    them.  With `errors='yield'` a problem is an item too: `error` (the input could not be read),
    `warning` (a video read only in part) or `note` (a live stream dropped, came back or ended),
    with `image` and `detections` None.

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
    note: str | None = None
    scene: SceneInfo | None = None        # how a sliced image was read (tile=)

    @property
    def ok(self) -> bool:
        return self.error is None and self.warning is None and self.note is None


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


def _get(q: queue.Queue[Any], stop: threading.Event) -> Any:
    while not stop.is_set():
        try:
            return q.get(timeout=_POLL_S)
        except queue.Empty:
            continue
    return _END


def pipelined(items: Iterable[Item], infer: Callable[[Sequence[Any]], Sequence[Detections]],
              batch_size: int = 1, queue_size: int = 8, prepare: Callable[[Frame], Any] | None = None,
              stop: threading.Event | None = None) -> Iterator[Item]:
    """Yield every item of `items` (engine.frames: consumed in a reader thread), in order, each
    Frame with its `detections` set.  Each frame to infer goes to the batching engine
    (engine.batching), whose model thread runs `infer(list of images)` on groups of up to
    `batch_size`; with `prepare`, the reader thread turns each frame to infer into `prepare(frame)`
    and `infer` gets those instead.  A frame with inferred=False gets the detections of the last
    inferred frame of its source; other items pass through.  An error in the reader or the
    model is raised here; when the caller stops (break, an exception, Ctrl-C) the reader and the
    model thread stop too, the model after its group in flight, and both have ended when this
    returns (a native thread left running at interpreter exit would abort the process).  `stop`,
    when given, is set then too: `items` may wait on it (a stream waiting to reconnect)."""
    # A group runs when `batch_size` frames wait or the input has ended.  The frames to infer are
    # bounded by the engine's queue (the reader waits for room); the frames between them (vid_stride)
    # wait in `order` with them, as many as the stride puts between `queue_size` frames to infer.
    engine: BatchEngine[Any, Detections] = BatchEngine(infer, max_batch=batch_size, max_delay=None,
                                                       queue_size=max(queue_size, batch_size))
    order: queue.Queue[Any] = queue.Queue()   # every frame in order, with its future
    stop = stop or threading.Event()

    def reader() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                future = None
                if isinstance(item, Frame) and item.inferred:
                    future = engine.submit(item.image if prepare is None else prepare(item), block=True)
                order.put((item, future))
            order.put(_END)
        except EngineClosed:   # the caller stopped
            return
        except BaseException as e:  # noqa: BLE001 - handed to the caller
            order.put(_Failure(e))
        finally:
            engine.flush()   # the last group runs, however few it holds

    # the reader runs in a copy of the caller's context (how messages name options, see errors.option)
    thread = threading.Thread(target=contextvars.copy_context().run, args=(reader,), daemon=True, name='mrcnn-reader')
    thread.start()
    last: dict[int, Detections | None] = {}
    try:
        while True:
            got = _get(order, stop)
            if got is _END:
                return
            if isinstance(got, _Failure):
                raise got.exc
            item, future = got
            if future is not None:
                item.detections = last[item.source_index] = future.result()
            elif isinstance(item, Frame):   # between vid_stride steps
                item.detections = last.get(item.source_index)
            yield item
    finally:
        stop.set()
        engine.close(cancel=True)
        thread.join(_READER_JOIN_S)
