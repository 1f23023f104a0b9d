"""`Predictor.stream`: every image and video frame of any source through a Runner, in order."""
from __future__ import annotations

import functools
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal, cast, get_args

from mrcnn_cli.engine.detections import Detections, Selection, check_score_thr, select_classes
from mrcnn_cli.engine.frames import Frame, Item, Problem, SceneEnd
from mrcnn_cli.engine.pipeline import StreamItem, pipelined
from mrcnn_cli.engine.preprocess import Prepared
from mrcnn_cli.engine.runner import Runner, Stage
from mrcnn_cli.engine.sliced import Slices, prepare_frame, scene_items
from mrcnn_cli.engine.tiling import TileOptions
from mrcnn_cli.engine.timing import no_stage
from mrcnn_cli.errors import MrcnnError, option, warn
from mrcnn_cli.io.images import MAX_PIXELS, check_max_pixels, read_image
from mrcnn_cli.io.sources import (
    ARRAY,
    ENCODED,
    FRAMES,
    IMAGE,
    SEQUENCE_FPS,
    STREAM,
    URL,
    Source,
    read_source_image,
)
from mrcnn_cli.io.video import ReadStats, VideoInfo, open_capture, read_frames, reopen_capture
from mrcnn_cli.model.spec import RECONNECT_TRIES, TEST_SCALE

ErrorMode = Literal['warn', 'raise', 'yield']
ERROR_MODES: tuple[str, ...] = get_args(ErrorMode)
Infer = Callable[[Sequence[Prepared]], list[Detections]]
STILL = (IMAGE, ARRAY, ENCODED, URL)


def source_items(sources: Sequence[Source], vid_stride: int = 1, max_frames: int | None = None,
                 max_pixels: int = MAX_PIXELS, tiles: TileOptions | None = None,
                 scale: tuple[int, int] = TEST_SCALE, reconnect: int = RECONNECT_TRIES,
                 cancel: threading.Event | None = None) -> Iterator[Item]:
    """The items of every Source in order: images decoded, videos read frame by frame, each as a
    Frame (a Problem when it cannot be read); anything larger than `max_pixels` is refused before
    it is decoded.  With `tiles`, each still image comes as a sliced scene (engine.sliced).  A live
    stream that drops is opened again, up to `reconnect` tries (a note each time); its frame
    numbers then skip the frames it would have sent while away; setting `cancel` ends a wait to
    reconnect at once."""
    for si, src in enumerate(sources):
        if tiles is not None and src.kind in STILL:
            yield from scene_items(si, src, max_pixels, tiles, scale)
        elif src.kind in STILL:
            try:
                yield Frame(src.name, src.kind, si, image=read_source_image(src, max_pixels))
            except MrcnnError as e:
                yield Problem(src.name, src.kind, si, error=str(e))
        elif src.kind == FRAMES:
            yield from _sequence_frames(si, src, vid_stride, max_frames, max_pixels)
        else:
            yield from _video_frames(si, src, vid_stride, max_frames, max_pixels, reconnect, cancel)


def _video_frames(si: int, src: Source, vid_stride: int, max_frames: int | None, max_pixels: int,
                  reconnect: int, cancel: threading.Event | None) -> Iterator[Item]:
    problem = functools.partial(Problem, src.name, src.kind, si)
    try:
        cap, info = open_capture(src.location, src.name, max_pixels)
    except MrcnnError as e:
        yield problem(error=str(e))
        return
    stats = ReadStats()
    live = src.kind == STREAM and not info.frames   # a stream of unknown length: it may drop and come back
    start, barren = 0, 0
    while True:
        read_before, index = stats.read, start - 1
        for index, img in read_frames(cap, info, stats, max_frames, start):
            yield Frame(src.name, src.kind, si, image=img, frame_index=index, inferred=index % vid_stride == 0,
                        video=info)
        barren = 0 if stats.read > read_before else barren + 1
        if not live or not reconnect or stats.read == 0 or (max_frames is not None and index + 1 >= max_frames):
            break
        gone = time.monotonic()
        yield problem(note=f'{src.name} dropped after frame {index}; reconnecting (up to {reconnect} tries)')
        try:
            cap = reopen_capture(src.location, src.name, info, reconnect, max_pixels, cancel) \
                if barren <= reconnect else None
        except MrcnnError as e:   # back at another size: what it sends now is lost
            yield problem(warning=str(e))
            return
        if cap is None:
            yield problem(note=f'{src.name} did not come back; it ends after frame {index}')
            return
        # Frame numbers go on by the time the stream was away, so that a tracker ages its tracks across the gap.
        away = time.monotonic() - gone
        start = index + 1 + round(away * info.fps)
        yield problem(note=f'{src.name} is back after {away:.1f} s; frames {index + 1}-{start - 1} were missed')
    if stats.read == 0:
        yield problem(error=f'{src.name}: no frame could be decoded')
    elif stats.truncated:
        yield problem(warning=f'{src.name} ended after {stats.read + stats.skipped} of {info.frames} frames '
                              '(truncated?)')
    elif stats.skipped:
        yield problem(warning=f'{src.name}: {stats.skipped} unreadable frames skipped')


def _sequence_frames(si: int, src: Source, vid_stride: int, max_frames: int | None,
                     max_pixels: int) -> Iterator[Item]:
    """The image files of a FRAMES source as one video's frames.  A frame that cannot be read is
    skipped with a warning (its number stays its place); a frame of another size than the first
    ends the sequence with an error: tracking needs one frame size."""
    problem = functools.partial(Problem, src.name, src.kind, si)
    paths = cast(tuple[Path, ...], src.location)[:max_frames]
    info = None
    for index, path in enumerate(paths):
        try:
            image = read_image(path, max_pixels)
        except MrcnnError as e:
            yield problem(warning=f'{e}; frame {index} of {src.name} skipped')
            continue
        height, width = image.shape[:2]
        if info is None:
            info = VideoInfo(width, height, SEQUENCE_FPS, len(paths))
        elif (width, height) != (info.width, info.height):
            yield problem(error=f'{path} is {width}x{height}, the earlier frames of {src.name} are '
                                f'{info.width}x{info.height}: a frame sequence needs one frame size (resize them)')
            return
        yield Frame(src.name, src.kind, si, image=image, frame_index=index, inferred=index % vid_stride == 0,
                    video=info)
    if info is None:
        yield problem(error=f'{src.name}: no frame could be read')


@dataclass(frozen=True)
class StreamOptions:
    """How a stream reads and runs its sources (see `Predictor.stream`).  `stage` is the timing
    hook (see engine.runner): each image's preparation runs in `stage('preprocess')` on the
    reader thread, and the runner gets it for its own stages on the model thread."""
    vid_stride: int = 1
    max_frames: int | None = None
    batch_size: int = 1
    errors: ErrorMode = 'warn'
    max_pixels: int = MAX_PIXELS
    selection: Selection = Selection()
    tiles: TileOptions | None = None
    stage: Stage = no_stage
    reconnect: int = RECONNECT_TRIES


def stream_sources(runner: Runner, sources: Sequence[Source],
                   options: StreamOptions = StreamOptions()) -> Iterator[StreamItem]:
    """StreamItems for `sources` through `runner` (see `Predictor.stream`).  The options are
    checked here, before anything is read."""
    if options.errors not in ERROR_MODES:
        raise MrcnnError(f'errors must be one of {", ".join(map(repr, ERROR_MODES))}, not {options.errors!r}')
    options = replace(options, max_pixels=check_max_pixels(options.max_pixels))
    if isinstance(options.reconnect, bool) or not isinstance(options.reconnect, int) or options.reconnect < 0:
        raise MrcnnError(f'reconnect must be a number of tries (0 or more), not {options.reconnect!r}')
    if options.tiles is not None and any(s.is_video for s in sources):
        warn(f'{option("tile")} slices images; videos, cameras and streams run whole')
    infer = _filtered(functools.partial(runner.predict_prepared, stage=options.stage), options.selection,
                      runner.classes)
    return _stream_items(runner, sources, infer, options)


def _filtered(infer: Infer, selection: Selection, names: Sequence[str]) -> Infer:
    """`infer` with the per-call selection applied once per inferred image (frames between
    `vid_stride` steps share the result).  Checked here, before anything is read."""
    if selection.score_thr is None and selection.classes is None:
        return infer
    score_thr = check_score_thr(0.0 if selection.score_thr is None else selection.score_thr)
    keep = select_classes(selection.classes, names)
    return lambda prepared: [det.filter(score_thr=score_thr, classes=keep) for det in infer(prepared)]


def _stream_items(runner: Runner, sources: Sequence[Source], infer: Infer,
                  options: StreamOptions) -> Iterator[StreamItem]:
    errors = options.errors
    stop = threading.Event()   # set when the caller stops: a stream waiting to reconnect gives up at once
    items = source_items(sources, options.vid_stride, options.max_frames, options.max_pixels, options.tiles,
                         runner.scale, options.reconnect, stop)
    slices = Slices(options.tiles, runner.classes)

    def prepare(frame: Frame) -> Prepared:
        with options.stage('preprocess'):
            return prepare_frame(runner, frame)

    for item in pipelined(items, infer, options.batch_size, prepare=prepare, stop=stop):
        if isinstance(item, Frame) and item.tile is not None:   # a tile's detections, held until its scene ends
            slices.add(item)
            continue
        if isinstance(item, Problem):
            slices.drop()
            if errors == 'raise' and item.error:
                raise MrcnnError(item.error)
            if errors != 'yield':
                warn(item.error or item.warning or item.note or '')
                continue
        yield public_item(item, slices)


def public_item(item: Item, slices: Slices) -> StreamItem:
    """What users read of an item (a SceneEnd's merged detections computed here)."""
    if isinstance(item, Problem):
        return StreamItem(item.source, item.kind, source_index=item.source_index, error=item.error,
                          warning=item.warning, note=item.note)
    if isinstance(item, SceneEnd):
        return StreamItem(item.source, item.kind, source_index=item.source_index, image=item.image,
                          detections=slices.merged(item), scene=item.info)
    return StreamItem(item.source, item.kind, item.frame_index, item.image, item.detections, item.inferred,
                      item.source_index, item.video)
