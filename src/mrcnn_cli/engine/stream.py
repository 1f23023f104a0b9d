"""`Predictor.stream`: every image and video frame of any source through the pipeline, in order."""
from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, cast

import numpy as np

from mrcnn_cli.engine.detections import Detections, Selection, check_score_thr, select_classes
from mrcnn_cli.engine.pipeline import StreamItem, pipelined
from mrcnn_cli.errors import MrcnnError, warn
from mrcnn_cli.io.fetch import fetch_url
from mrcnn_cli.io.images import MAX_PIXELS, as_bgr, check_max_pixels, decode_image, read_image, too_large
from mrcnn_cli.io.sources import ARRAY, ENCODED, IMAGE, URL, Source
from mrcnn_cli.io.video import ReadStats, open_capture, read_frames

if TYPE_CHECKING:
    from mrcnn_cli.engine.predictor import Predictor
    from mrcnn_cli.engine.preprocess import Prepared

ERROR_MODES = ('warn', 'raise', 'yield')
Infer = Callable[[Sequence['Prepared']], list[Detections]]


def source_frames(sources: Sequence[Source], vid_stride: int = 1, max_frames: int | None = None,
                  max_pixels: int = MAX_PIXELS) -> Iterator[StreamItem]:
    """Frames of every Source in order: images decoded, videos read frame by frame; anything
    larger than `max_pixels` is refused before it is decoded."""
    for si, src in enumerate(sources):
        if src.kind in (IMAGE, ARRAY, ENCODED, URL):
            try:
                yield StreamItem(src.name, src.kind, source_index=si, image=read_source_image(src, max_pixels))
            except MrcnnError as e:
                yield StreamItem(src.name, src.kind, source_index=si, error=str(e))
        else:
            yield from _video_frames(si, src, vid_stride, max_frames, max_pixels)


def read_source_image(src: Source, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """The BGR uint8 image of a still-image Source: a file read, bytes decoded, a URL fetched and
    decoded, an array taken as it is (or converted from grey, BGRA or RGB)."""
    if src.kind == IMAGE:
        return read_image(src.location, max_pixels)
    if src.kind == ARRAY:
        img = as_bgr(cast(np.ndarray, src.location), src.name, src.channels)
        if img.shape[0] * img.shape[1] > max_pixels:
            raise too_large(src.name, img.shape[1], img.shape[0], max_pixels)
        return img
    data = fetch_url(str(src.location), src.name) if src.kind == URL else src.location
    return decode_image(data, src.name, max_pixels)


def _video_frames(si: int, src: Source, vid_stride: int, max_frames: int | None,
                  max_pixels: int) -> Iterator[StreamItem]:
    def problem(error: str | None = None, warning: str | None = None) -> StreamItem:
        return StreamItem(src.name, src.kind, source_index=si, error=error, warning=warning)
    try:
        cap, info = open_capture(src.location, src.name, max_pixels)
    except MrcnnError as e:
        yield problem(error=str(e))
        return
    stats = ReadStats()
    for index, img in read_frames(cap, info, stats, max_frames):
        yield StreamItem(src.name, src.kind, index, img, inferred=index % vid_stride == 0, source_index=si,
                         video=info)
    if stats.read == 0:
        yield problem(error=f'{src.name}: no frame could be decoded')
    elif stats.truncated:
        yield problem(warning=f'{src.name} ended after {stats.read + stats.skipped} of {info.frames} frames '
                              '(truncated?)')
    elif stats.skipped:
        yield problem(warning=f'{src.name}: {stats.skipped} unreadable frames skipped')


def stream_sources(predictor: Predictor, sources: Sequence[Source], *, vid_stride: int = 1,
                   max_frames: int | None = None, batch_size: int = 1, errors: str = 'warn',
                   max_pixels: int = MAX_PIXELS, selection: Selection = Selection()) -> Iterator[StreamItem]:
    """StreamItems for `sources` (see `Predictor.stream`)."""
    if errors not in ERROR_MODES:
        raise MrcnnError(f'errors must be one of {", ".join(map(repr, ERROR_MODES))}, not {errors!r}')
    max_pixels = check_max_pixels(max_pixels)
    infer = _filtered(predictor.predict_prepared, selection, predictor.classes)
    return _items(predictor, sources, infer, vid_stride, max_frames, batch_size, errors, max_pixels)


def _filtered(infer: Infer, selection: Selection, names: Sequence[str]) -> Infer:
    """`infer` with the per-call selection applied once per inferred image (frames between
    `vid_stride` steps share the result).  Checked here, before anything is read."""
    if selection.score_thr is None and selection.classes is None:
        return infer
    score_thr = check_score_thr(0.0 if selection.score_thr is None else selection.score_thr)
    keep = select_classes(selection.classes, names)
    return lambda prepared: [det.filter(score_thr=score_thr, classes=keep) for det in infer(prepared)]


def _items(predictor: Predictor, sources: Sequence[Source], infer: Infer, vid_stride: int, max_frames: int | None,
           batch_size: int, errors: str, max_pixels: int) -> Iterator[StreamItem]:
    for item in pipelined(source_frames(sources, vid_stride, max_frames, max_pixels), infer, batch_size,
                          prepare=predictor.prepare):
        if item.ok or errors == 'yield':
            yield item
        elif errors == 'raise' and item.error:
            raise MrcnnError(item.error)
        else:
            warn(item.error or item.warning or '')
