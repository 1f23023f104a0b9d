"""`Predictor.stream`: every image and video frame of any source through a Runner, in order."""
from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Literal, cast, get_args

import cv2
import numpy as np

from mrcnn_cli.engine.detections import Detections, Selection, check_score_thr, select_classes
from mrcnn_cli.engine.merge import TilePass, merge_passes
from mrcnn_cli.engine.pipeline import StreamItem, pipelined
from mrcnn_cli.engine.preprocess import Prepared, rescale_size
from mrcnn_cli.engine.runner import Runner, Stage
from mrcnn_cli.engine.tiling import Rect, SceneInfo, TileOptions, TilePart, tile_grid
from mrcnn_cli.engine.timing import no_stage
from mrcnn_cli.errors import MrcnnError, option, warn
from mrcnn_cli.io.fetch import fetch_url
from mrcnn_cli.io.images import MAX_PIXELS, as_bgr, check_max_pixels, decode_image, read_image, too_large
from mrcnn_cli.io.scene import PREVIEW_MAX_SIDE, ArrayScene, Scene, TiffScene, is_tiff
from mrcnn_cli.io.sources import ARRAY, ENCODED, IMAGE, URL, Source
from mrcnn_cli.io.video import ReadStats, open_capture, read_frames
from mrcnn_cli.model.spec import TEST_SCALE

ErrorMode = Literal['warn', 'raise', 'yield']
ERROR_MODES: tuple[str, ...] = get_args(ErrorMode)
Infer = Callable[[Sequence['Prepared']], list[Detections]]


def source_frames(sources: Sequence[Source], vid_stride: int = 1, max_frames: int | None = None,
                  max_pixels: int = MAX_PIXELS, tiles: TileOptions | None = None,
                  scale: tuple[int, int] = TEST_SCALE) -> Iterator[StreamItem]:
    """Frames of every Source in order: images decoded, videos read frame by frame; anything
    larger than `max_pixels` is refused before it is decoded.  With `tiles`, each image comes as
    its tiles' frames, then the whole-image pass's (`tiles.full`, resized for the model's `scale`),
    then one frame without an image that closes it (see `scene_frames`)."""
    for si, src in enumerate(sources):
        if tiles is not None and src.kind in (IMAGE, ARRAY, ENCODED, URL):
            yield from scene_frames(si, src, max_pixels, tiles, scale)
        elif src.kind in (IMAGE, ARRAY, ENCODED, URL):
            try:
                yield StreamItem(src.name, src.kind, source_index=si, image=read_source_image(src, max_pixels))
            except MrcnnError as e:
                yield _problem(si, src, error=str(e))
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


def _problem(si: int, src: Source, error: str | None = None, warning: str | None = None) -> StreamItem:
    """The item that reports a source's problem (no image, no detections)."""
    return StreamItem(src.name, src.kind, source_index=si, error=error, warning=warning)


def open_scene(src: Source, max_pixels: int) -> Scene:
    """A still-image Source as a Scene: a TIFF file read by regions (`max_pixels` then bounds what
    is decoded at once, not the whole image), anything else decoded whole."""
    if src.kind == IMAGE and is_tiff(Path(str(src.location))):
        return TiffScene(Path(str(src.location)), src.name, max_pixels)
    return ArrayScene(read_source_image(src, max_pixels), src.name)


def scene_frames(si: int, src: Source, max_pixels: int, tiles: TileOptions,
                 scale: tuple[int, int]) -> Iterator[StreamItem]:
    """A sliced image's frames: one per tile (its pixels, `tile` its region), the whole-image
    pass's, and a closing frame with `scene` set and no image (the image itself when it is held
    whole anyway).  Damaged TIFF segments (read as black) follow as a warning."""
    problem = functools.partial(_problem, si, src)
    try:
        scene = open_scene(src, max_pixels)
    except MrcnnError as e:
        yield problem(error=str(e))
        return
    try:
        grid = tile_grid(scene.width, scene.height, tiles)
        whole = scene.whole
        scene.keep_for(*tiles.size)
        if whole is None:
            scene.start_preview(PREVIEW_MAX_SIDE)
        for rect in grid:
            yield StreamItem(src.name, src.kind, source_index=si, image=scene.read(*rect), tile=TilePart(rect))
        preview = None if whole is not None else scene.preview(PREVIEW_MAX_SIDE)
        if tiles.full:
            yield _full_pass_frame(si, src, scene, whole, preview, scale)
        info = SceneInfo(scene.width, scene.height, len(grid), tiles.full, preview, scene.georef)
        yield StreamItem(src.name, src.kind, source_index=si, image=whole, inferred=False, scene=info)
    except MrcnnError as e:
        yield problem(error=str(e))
        return
    finally:
        scene.close()
    if scene.georef_problem:
        yield problem(warning=f'{src.name}: {scene.georef_problem}; its GeoJSON is in pixel coordinates')
    if scene.damaged:
        yield problem(warning=f'{src.name}: {scene.damaged} of {scene.segments} TIFF segments could not be decoded '
                              '(damaged?) and were read as black')


def _full_pass_frame(si: int, src: Source, scene: Scene, whole: np.ndarray | None, preview: np.ndarray | None,
                     scale: tuple[int, int]) -> StreamItem:
    """The whole image for the model: the image itself, or for a scene read by regions its
    preview shrunk to the model's input size (its detections are pasted onto the full scene)."""
    region = Rect(0, 0, scene.width, scene.height)
    if whole is not None:
        return StreamItem(src.name, src.kind, source_index=si, image=whole, tile=TilePart(region, full_pass=True))
    small = cv2.resize(cast(np.ndarray, preview), rescale_size(scene.width, scene.height, scale),
                       interpolation=cv2.INTER_AREA)
    return StreamItem(src.name, src.kind, source_index=si, image=small,
                      tile=TilePart(region, full_pass=True, scene_shape=(scene.height, scene.width)))


def _video_frames(si: int, src: Source, vid_stride: int, max_frames: int | None,
                  max_pixels: int) -> Iterator[StreamItem]:
    problem = functools.partial(_problem, si, src)
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


def stream_sources(runner: Runner, sources: Sequence[Source], *, vid_stride: int = 1,
                   max_frames: int | None = None, batch_size: int = 1, errors: ErrorMode = 'warn',
                   max_pixels: int = MAX_PIXELS, selection: Selection = Selection(),
                   tiles: TileOptions | None = None, stage: Stage = no_stage) -> Iterator[StreamItem]:
    """StreamItems for `sources` (see `Predictor.stream`).  `stage` is the timing hook (see
    engine.runner): each image's preparation runs in `stage('preprocess')` on the reader thread,
    and the runner gets it for its own stages on the model thread."""
    if errors not in ERROR_MODES:
        raise MrcnnError(f'errors must be one of {", ".join(map(repr, ERROR_MODES))}, not {errors!r}')
    max_pixels = check_max_pixels(max_pixels)
    if tiles is not None and any(s.is_video for s in sources):
        warn(f'{option("tile")} slices images; videos, cameras and streams run whole')
    infer = _filtered(functools.partial(runner.predict_prepared, stage=stage), selection, runner.classes)
    return _items(runner, sources, infer, vid_stride, max_frames, batch_size, errors, max_pixels, tiles, stage)


def _filtered(infer: Infer, selection: Selection, names: Sequence[str]) -> Infer:
    """`infer` with the per-call selection applied once per inferred image (frames between
    `vid_stride` steps share the result).  Checked here, before anything is read."""
    if selection.score_thr is None and selection.classes is None:
        return infer
    score_thr = check_score_thr(0.0 if selection.score_thr is None else selection.score_thr)
    keep = select_classes(selection.classes, names)
    return lambda prepared: [det.filter(score_thr=score_thr, classes=keep) for det in infer(prepared)]


def _items(runner: Runner, sources: Sequence[Source], infer: Infer, vid_stride: int, max_frames: int | None,
           batch_size: int, errors: ErrorMode, max_pixels: int, tiles: TileOptions | None,
           stage: Stage) -> Iterator[StreamItem]:
    frames = source_frames(sources, vid_stride, max_frames, max_pixels, tiles, runner.scale)
    passes: list[TilePass] = []
    for item in pipelined(frames, infer, batch_size, prepare=lambda frame: _prepare(runner, frame, stage)):
        if item.tile is not None:   # a tile's detections, held until its scene is complete
            passes.append(TilePass(cast(Detections, item.detections), item.tile.region))
            continue
        if item.scene is not None:
            item.detections = merge_passes(passes, item.scene.height, item.scene.width, cast(TileOptions, tiles),
                                           runner.classes)
        passes = []
        if item.ok or errors == 'yield':
            yield item
        elif errors == 'raise' and item.error:
            raise MrcnnError(item.error)
        else:
            warn(item.error or item.warning or '')


def _prepare(runner: Runner, frame: StreamItem, stage: Stage) -> Prepared:
    """The frame made ready for the network; a whole-scene pass on a shrunk copy is mapped back
    onto the full scene (its masks are pasted there, as for any image)."""
    with stage('preprocess'):
        prepared = runner.prepare(cast(np.ndarray, frame.image))
    if frame.tile is None or frame.tile.scene_shape is None:
        return prepared
    height, width = frame.tile.scene_shape
    h, w = prepared.img_shape
    return Prepared(prepared.tensor, prepared.img_shape, (w / width, h / height), (height, width))
