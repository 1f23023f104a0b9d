"""`Predictor.stream`: every image and video frame of any source through the pipeline, in order."""
from __future__ import annotations

import warnings
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from mrcnn_cli.engine.detections import Detections
from mrcnn_cli.engine.pipeline import Frame, pipelined
from mrcnn_cli.errors import MrcnnError, MrcnnWarning
from mrcnn_cli.io.images import MAX_PIXELS, check_max_pixels, read_image
from mrcnn_cli.io.sources import ARRAY, IMAGE, Source
from mrcnn_cli.io.video import ReadStats, open_capture, read_frames

ERROR_MODES = ('warn', 'raise', 'yield')


@dataclass
class StreamItem:
    """One image or video frame with its detections, as `Predictor.stream` yields them.

    `source` names the input (its path, URL or camera index as given; `array<i>` for arrays) and
    `kind` says what it is (image, video, camera, stream, array).  Between `vid_stride` steps
    `inferred` is False and `detections` are the last inferred frame's, as `mrcnn predict` draws
    them.  With `errors='yield'` a problem is an item too: `error` (the input could not be read)
    or `warning` (a video read only in part), with `image` and `detections` None."""
    source: str
    kind: str
    frame_index: int
    image: np.ndarray | None
    detections: Detections | None
    inferred: bool = True
    source_index: int = 0
    video: object = None          # VideoInfo (fps, width, height, declared frames) of video frames
    error: str | None = None
    warning: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None and self.warning is None


def source_frames(sources, vid_stride=1, max_frames=None, max_pixels=MAX_PIXELS):
    """Frames of every Source in order: images decoded, videos read frame by frame; anything
    larger than `max_pixels` is refused before it is decoded."""
    for si, src in enumerate(sources):
        if src.kind == IMAGE:
            try:
                yield Frame(si, image=read_image(src.location, max_pixels))
            except MrcnnError as e:
                yield Frame(si, error=str(e))
        elif src.kind == ARRAY:
            yield _array_frame(si, src)
        else:
            yield from _video_frames(si, src, vid_stride, max_frames, max_pixels)


def _array_frame(si, src):
    img = src.location
    if img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3 or 0 in img.shape:
        return Frame(si, error=f'{src.name}: need a BGR uint8 HxWx3 array, got {img.dtype} {img.shape}')
    return Frame(si, image=img)


def _video_frames(si, src, vid_stride, max_frames, max_pixels):
    try:
        cap, info = open_capture(src.location, src.name, max_pixels)
    except MrcnnError as e:
        yield Frame(si, error=str(e))
        return
    stats = ReadStats()
    for index, img in read_frames(cap, info, stats, max_frames):
        yield Frame(si, index, img, infer=index % vid_stride == 0, video=info)
    if stats.read == 0:
        yield Frame(si, error=f'{src.name}: no frame could be decoded')
    elif stats.truncated:
        yield Frame(si, warning=f'{src.name} ended after {stats.read + stats.skipped} of {info.frames} frames '
                                '(truncated?)')
    elif stats.skipped:
        yield Frame(si, warning=f'{src.name}: {stats.skipped} unreadable frames skipped')


def stream_sources(predictor, sources: list[Source], *, vid_stride: int = 1, max_frames: int | None = None,
                   batch_size: int = 1, errors: str = 'warn', max_pixels: int = MAX_PIXELS) -> Iterator[StreamItem]:
    """StreamItems for `sources` (see `Predictor.stream`)."""
    if errors not in ERROR_MODES:
        raise ValueError(f'errors must be one of {ERROR_MODES}, not {errors!r}')
    max_pixels = check_max_pixels(max_pixels)
    for frame, det in pipelined(source_frames(sources, vid_stride, max_frames, max_pixels), predictor.predict_prepared,
                                batch_size, prepare=predictor.prepare):
        src = sources[frame.source_index]
        item = StreamItem(src.name, src.kind, frame.index, frame.image, det, frame.infer, frame.source_index,
                          frame.video, frame.error, frame.warning)
        if item.ok or errors == 'yield':
            yield item
        elif errors == 'raise' and item.error:
            raise MrcnnError(item.error)
        else:
            warnings.warn(item.error or item.warning, MrcnnWarning, stacklevel=2)
