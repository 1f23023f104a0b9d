"""`Predictor`: the model as users hold it (what `mrcnn_cli.load` returns).  It wraps a backend
(backends.base.Backend, a Runner) and reads any input: call it on an image, `predict` a list,
`stream` any source."""
from __future__ import annotations

import glob
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Literal, TypedDict, Union, overload

import numpy as np
import torch

from mrcnn_cli.backends.base import Backend
from mrcnn_cli.engine.choice import Precision
from mrcnn_cli.engine.detections import DEFAULT_SCORE_THR, ClassSelection, Detections, Selection
from mrcnn_cli.engine.preprocess import Prepared
from mrcnn_cli.engine.runner import Palette, Stage
from mrcnn_cli.engine.stream import ErrorMode, StreamItem, StreamOptions, stream_sources
from mrcnn_cli.engine.tiling import TileOptions, TileSize, parse_tile_size
from mrcnn_cli.engine.timing import no_stage
from mrcnn_cli.engine.tracking import TrackOptions, tracked_items
from mrcnn_cli.errors import MrcnnError, warn
from mrcnn_cli.io.fetch import is_http_url
from mrcnn_cli.io.images import MAX_PIXELS
from mrcnn_cli.io.sources import collect_sources
from mrcnn_cli.model.spec import RECONNECT_TRIES, TRACK_SCORE_THR

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage
    from typing_extensions import Unpack

    from mrcnn_cli.model.mask_rcnn import MaskRCNN
    from mrcnn_cli.model.spec import ModelSpec

# One image as a caller has it: a path, an http(s) URL, encoded bytes or a binary file, a BGR (or,
# with channels='rgb', RGB) uint8 array, a PIL image, or a CHW RGB tensor.
ImageLike = Union[str, os.PathLike, bytes, IO[bytes], np.ndarray, 'PILImage', torch.Tensor]  # noqa: UP007
# Several: a list of those, a folder or glob pattern, an NHWC array or an NCHW tensor.
ImagesLike = Union[ImageLike, Sequence[ImageLike]]  # noqa: UP007
# Slicing: a tile size (512, '640,480', (640, 480)) with the defaults, or TileOptions; None: whole images.
TileLike = Union[TileSize, TileOptions, None]  # noqa: UP007
Channels = Literal['bgr', 'rgb']


class PerCallOptions(TypedDict, total=False):
    """The per-call options of `stream` (`__call__` and `predict` name them as keywords)."""
    score_thr: float
    classes: ClassSelection
    channels: Channels
    tile: TileLike
    reconnect: int   # tries to reopen a live stream that drops


class Predictor:
    """BGR uint8 images in, Detections out.

    >>> det = model('street.jpg')                               # doctest: +SKIP
    >>> dets = model.predict(['a.jpg', 'b.png'], batch_size=2)  # doctest: +SKIP
    >>> for item in model.stream('road.mp4', vid_stride=2):      # doctest: +SKIP
    ...     print(item.frame_index, len(item.detections))

    Images may be given as paths, http(s) URLs, encoded bytes, binary file objects, numpy arrays
    (BGR uint8 as cv2.imread gives them; RGB with `channels='rgb'`), PIL images or torch tensors
    (CHW RGB, uint8 or float in [0, 1], as torchvision reads images).  Every call keeps detections
    scoring at least `score_thr`, 0.3 unless told (as `mrcnn predict`, `plot` and `mrcnn serve`);
    `score_thr=0` keeps all the model gives (mmdetection's > 0.05, 100 per image).

    `backend` is what runs the network (a Runner, see engine.runner): what the stream, the server
    and the benchmark take.
    """

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    # what the backend says of itself
    @property
    def name(self) -> str:
        return self.backend.name

    @property
    def classes(self) -> tuple[str, ...]:
        return self.backend.classes

    @property
    def scale(self) -> tuple[int, int]:
        return self.backend.scale

    @property
    def device(self) -> torch.device:
        return self.backend.device

    @property
    def precision(self) -> Precision:
        return self.backend.precision

    @property
    def spec(self) -> ModelSpec:
        return self.backend.spec

    @property
    def source(self) -> str:
        return self.backend.source

    @property
    def palette(self) -> Palette | None:
        return self.backend.palette

    @property
    def compiled(self) -> bool:
        return self.backend.compiled

    @property
    def batches(self) -> bool:
        return self.backend.batches

    @property
    def execution_device(self) -> str:
        return self.backend.execution_device

    def describe(self) -> str:
        """One line: architecture, backend, device, precision and where the weights came from."""
        return self.backend.describe()

    def identity(self) -> dict[str, Any]:
        """What about this model changes its results (what a results log records)."""
        return self.backend.identity()

    def torch_model(self) -> MaskRCNN:
        """The PyTorch model behind it (what `mrcnn export` traces)."""
        return self.backend.torch_model()

    # the Runner interface, passed through (a Predictor runs wherever a Runner does)
    def prepare(self, image: np.ndarray) -> Prepared:
        return self.backend.prepare(image)

    def predict_prepared(self, prepared: Sequence[Prepared], stage: Stage = no_stage) -> list[Detections]:
        return self.backend.predict_prepared(prepared, stage)

    def __repr__(self) -> str:
        return f'<{type(self.backend).__name__}: {self.describe()}>'

    @overload
    def __call__(  # type: ignore[overload-overlap] # a str may name a folder
            self, source: ImageLike, *, score_thr: float = DEFAULT_SCORE_THR, classes: ClassSelection = None,
            channels: Channels = 'bgr', batch_size: int = 1, max_pixels: int = MAX_PIXELS,
            tile: TileLike = None) -> Detections: ...

    @overload
    def __call__(self, source: Sequence[ImageLike], *, score_thr: float = DEFAULT_SCORE_THR,
                 classes: ClassSelection = None, channels: Channels = 'bgr', batch_size: int = 1,
                 max_pixels: int = MAX_PIXELS, tile: TileLike = None) -> list[Detections]: ...

    def __call__(self, source: ImagesLike, *, score_thr: float = DEFAULT_SCORE_THR, classes: ClassSelection = None,
                 channels: Channels = 'bgr', batch_size: int = 1, max_pixels: int = MAX_PIXELS,
                 tile: TileLike = None) -> Detections | list[Detections]:
        """Detections for one image; a list of them for a list, a folder, a glob pattern or a
        batch (NHWC array, NCHW tensor).  See `predict` for the options."""
        dets = self.predict(source, score_thr=score_thr, classes=classes, channels=channels, batch_size=batch_size,
                            max_pixels=max_pixels, tile=tile)
        return dets[0] if _is_one_image(source) else dets

    def predict(self, images: ImagesLike, *, score_thr: float = DEFAULT_SCORE_THR, classes: ClassSelection = None,
                channels: Channels = 'bgr', batch_size: int = 1, max_pixels: int = MAX_PIXELS,
                tile: TileLike = None) -> list[Detections]:
        """One Detections per image, in order: images as the class docstring lists, a list of them,
        a folder or a glob pattern (its images, sorted).  `score_thr` keeps detections scoring at
        least that (0.3; 0 keeps all the model gives); `classes` keeps these classes, by name or
        0-based index (`'cat'`, `15`, `['person', 2]`); `channels='rgb'` says numpy arrays are RGB.
        An unreadable image, or one of more than `max_pixels`, raises MrcnnError.  Decoding
        overlaps the network (the same pipeline as `stream`).

        `tile=512` (or 'W,H', or a TileOptions for the overlap, a whole-image pass and the merge
        rules) slices each image into overlapping tiles, runs each at the model's scale (small
        objects grow), and merges their detections on masks into full-image coordinates; a TIFF is
        then read a region at a time, and `max_pixels` bounds what is decoded at once."""
        tiles = tile_options(tile)
        sources, _ = collect_sources(images, warn=_raise, images_only=True, unique=False, channels=channels)
        items = stream_sources(self.backend, sources, StreamOptions(
            batch_size=batch_size, errors='raise', max_pixels=max_pixels, selection=Selection(score_thr, classes),
            tiles=tiles))
        return [item.detections for item in items if item.detections is not None]   # errors='raise': each has

    def stream(self, source: ImagesLike, *, vid_stride: int = 1, max_frames: int | None = None, batch_size: int = 1,
               errors: ErrorMode = 'warn', max_pixels: int = MAX_PIXELS,
               **per_call: Unpack[PerCallOptions]) -> Iterator[StreamItem]:
        """One StreamItem per image or frame read, in order, from any source `mrcnn predict`
        takes: image files, folders, glob patterns, videos, camera indexes, stream and image URLs,
        and what `predict` takes in memory (or a list of them).  Decoding, the network and the
        caller's own work overlap (three threads, bounded queues).  `vid_stride` runs the model on
        every Nth video frame, `max_frames` stops each video early; a live stream that drops is
        opened again, up to `reconnect` tries, its frame numbers skipping the time away (a warning
        says so).  Unreadable inputs:
        `errors='warn'` (a warning, then skipped), 'raise' (MrcnnError) or 'yield' (an item with
        `error` set); images and videos of more than `max_pixels` pixels are such inputs, refused
        before they are decoded.  `score_thr`, `classes`, `channels` and `tile` as in `predict`
        (a sliced image is one item, `scene` set)."""
        unknown = set(per_call) - set(PerCallOptions.__annotations__)
        if unknown:
            raise TypeError(f'stream() got an unexpected keyword argument {sorted(unknown)[0]!r}')
        sources, _ = collect_sources(source, warn=_warn_missing, channels=per_call.get('channels', 'bgr'))
        return stream_sources(self.backend, sources, StreamOptions(
            vid_stride=vid_stride, max_frames=max_frames, batch_size=batch_size, errors=errors, max_pixels=max_pixels,
            reconnect=per_call.get('reconnect', RECONNECT_TRIES),
            selection=Selection(per_call.get('score_thr', DEFAULT_SCORE_THR), per_call.get('classes')),
            tiles=tile_options(per_call.get('tile'))))

    def track(self, source: ImagesLike, *, tracker: str | TrackOptions = 'bytetrack', vid_stride: int = 1,
              max_frames: int | None = None, batch_size: int = 1, errors: ErrorMode = 'warn',
              max_pixels: int = MAX_PIXELS, **per_call: Unpack[PerCallOptions]) -> Iterator[StreamItem]:
        """`stream` with identities: each item's detections are those of a confirmed track, with
        `track_ids` (from 1, stable over the track's life).  `source` is a video, a camera index, a
        stream URL, or a folder or glob pattern of frames (its image files in sorted order, one
        sequence; arrays given together, a list or an NHWC batch, are one sequence too).  One
        tracker per video or sequence.  In a loop of your own, keep an
        `engine.tracking.MaskTracker` and `update` it with each frame's Detections.

        `tracker` 'bytetrack' (roboflow's trackers, `pip install 'mrcnn-cli[track]'`), or a
        TrackOptions for its settings: association by mask or box IoU, the score that starts a
        track, the least IoU of a match, how long a lost track waits, how many frames a missed
        track is filled in.  `score_thr` defaults to 0.1 here: low-scoring detections continue
        tracks (ByteTrack's second stage).  `vid_stride` runs the model on every Nth frame; the
        tracker predicts across the frames between, and across the time a live stream was away
        (tracks outlive a gap up to their buffer).  The other options as in `stream` (`tile`
        excepted: tracked frames run whole)."""
        unknown = set(per_call) - (set(PerCallOptions.__annotations__) - {'tile'})
        if unknown:
            raise TypeError(f'track() got an unexpected keyword argument {sorted(unknown)[0]!r}')
        options = (tracker if isinstance(tracker, TrackOptions) else TrackOptions(tracker=tracker)).checked()
        sources, _ = collect_sources(source, warn=_warn_missing, channels=per_call.get('channels', 'bgr'),
                                     sequences=True)
        items = stream_sources(self.backend, sources, StreamOptions(
            vid_stride=vid_stride, max_frames=max_frames, batch_size=batch_size, errors=errors, max_pixels=max_pixels,
            reconnect=per_call.get('reconnect', RECONNECT_TRIES),
            selection=Selection(per_call.get('score_thr', TRACK_SCORE_THR), per_call.get('classes'))))
        return tracked_items(items, options)


def tile_options(tile: TileLike) -> TileOptions | None:
    """`tile=` as TileOptions (a size gets the defaults)."""
    if tile is None or isinstance(tile, TileOptions):
        return tile
    return TileOptions(size=parse_tile_size(tile))


def _warn_missing(message: str) -> None:
    warn(message.removeprefix('warning: '))


def _raise(message: str) -> None:
    raise MrcnnError(message.removeprefix('warning: '))


def _is_one_image(source: object) -> bool:
    """False for what stands for several images: a list, a folder, a glob pattern, a batch."""
    if isinstance(source, (list, tuple)):
        return False
    if isinstance(source, (np.ndarray, torch.Tensor)):
        return source.ndim != 4
    if isinstance(source, (str, os.PathLike)):
        text = os.fspath(source)
        if isinstance(text, str) and not is_http_url(text):
            return not (Path(text).is_dir() or (not Path(text).exists() and glob.has_magic(text)))
    return True
