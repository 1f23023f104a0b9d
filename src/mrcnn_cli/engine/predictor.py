"""The one predictor interface that predict, eval, bench and the Python API share."""
from __future__ import annotations

import functools
import glob
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, ClassVar, TypedDict, Union, cast, overload

import numpy as np
import torch

from mrcnn_cli.engine.choice import ModelChoice, Precision
from mrcnn_cli.engine.detections import ClassSelection, Detections, Selection
from mrcnn_cli.engine.postprocess import to_detections
from mrcnn_cli.engine.preprocess import TEST_SCALE, Prepared, check_scale, pad_batch, prepare
from mrcnn_cli.engine.stream import StreamItem, stream_sources
from mrcnn_cli.engine.tiling import TileOptions, TileSize, parse_tile_size
from mrcnn_cli.engine.timing import no_stage
from mrcnn_cli.errors import MrcnnError, option, warn
from mrcnn_cli.io.fetch import is_http_url
from mrcnn_cli.io.files import file_sha256
from mrcnn_cli.io.images import MAX_PIXELS
from mrcnn_cli.io.sources import collect_sources

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage
    from typing_extensions import Unpack

    from mrcnn_cli.model.mask_rcnn import MaskRCNN
    from mrcnn_cli.model.roi_heads import NetworkOutput
    from mrcnn_cli.model.spec import ModelSpec

# One image as a caller has it: a path, an http(s) URL, encoded bytes or a binary file, a BGR (or,
# with channels='rgb', RGB) uint8 array, a PIL image, or a CHW RGB tensor.
ImageLike = Union[str, os.PathLike, bytes, IO[bytes], np.ndarray, 'PILImage', torch.Tensor]  # noqa: UP007
# Several: a list of those, a folder or glob pattern, an NHWC array or an NCHW tensor.
ImagesLike = Union[ImageLike, Sequence[ImageLike]]  # noqa: UP007
Stage = Callable[[str], AbstractContextManager[Any]]
# Slicing: a tile size (512, '640,480', (640, 480)) with the defaults, or TileOptions; None: whole images.
TileLike = Union[TileSize, TileOptions, None]  # noqa: UP007


class PerCallOptions(TypedDict, total=False):
    """The per-call options of `stream` (`__call__` and `predict` name them as keywords)."""
    score_thr: float | None
    classes: ClassSelection
    channels: str
    tile: TileLike


def resolve_device(device: str | torch.device | None = 'auto') -> torch.device:
    """'auto' picks the first CUDA GPU when there is one, else the CPU."""
    if device in (None, 'auto'):
        return torch.device('cuda' if torch.cuda.is_available() else 'cpu')
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError):
        raise MrcnnError(f"unknown device {device!r} (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == 'cuda' and not torch.cuda.is_available():
        raise MrcnnError(f'device {device} requested but no CUDA GPU is available')
    if dev.type not in ('cpu', 'cuda'):
        raise MrcnnError(f"unsupported device {device!r} (use auto, cpu, cuda or cuda:N)")
    return dev


class Predictor:
    """BGR uint8 images in, Detections out.  Backends implement `run_network` and `from_choice`,
    and declare what they take in the class attributes below (which `load`, bench's rows and the
    command line consult instead of backend names).

    >>> det = model('street.jpg')                               # doctest: +SKIP
    >>> dets = model.predict(['a.jpg', 'b.png'], batch_size=2)  # doctest: +SKIP
    >>> for item in model.stream('road.mp4', vid_stride=2):      # doctest: +SKIP
    ...     print(item.frame_index, len(item.detections))

    Images may be given as paths, http(s) URLs, encoded bytes, binary file objects, numpy arrays
    (BGR uint8 as cv2.imread gives them; RGB with `channels='rgb'`), PIL images or torch tensors
    (CHW RGB, uint8 or float in [0, 1], as torchvision reads images).
    """

    name: ClassVar[str] = 'base'                          # the one spelling: --backend NAME, backend='NAME'
    precisions: ClassVar[tuple[Precision, ...]] = (Precision.FP32,)
    batches: ClassVar[bool] = True        # several images per network call (else one, whatever batch_size)
    compiles: ClassVar[bool] = False      # takes compile=True
    runs_graph: ClassVar[bool] = False    # runs an `mrcnn export` file (onnx=), not a checkpoint
    takes_provider: ClassVar[bool] = False   # takes ort_provider=
    describe_template: ClassVar[str] = '{name} backend on {device}'   # what runs the network, for describe()
    precision_hint: ClassVar[str] = ''    # what to do instead when a precision is refused
    compiled: bool = False                # this predictor runs torch.compile'd code

    @classmethod
    def from_choice(cls, choice: ModelChoice) -> Predictor:
        """This backend's predictor for a ModelChoice that `check_choice` accepted."""
        raise NotImplementedError

    @classmethod
    def check_choice(cls, choice: ModelChoice) -> None:
        """One MrcnnError for an option this backend does not take (never ignored quietly)."""
        if choice.compile and not cls.compiles:
            raise MrcnnError(f'{option("compile", True)} applies to the torch backend, not {cls.name}')
        if cls.runs_graph and choice.onnx is None:
            raise MrcnnError(f'{option("backend", cls.name)} needs {option("onnx", meta="FILE")} '
                             '(make one with `mrcnn export --onnx`)')
        if not cls.runs_graph and choice.onnx is not None:
            raise MrcnnError(f'{option("onnx", meta="FILE")} is run by the onnx or openvino backend, not '
                             f'{option("backend", cls.name)}')
        if choice.ort_provider is not None and not cls.takes_provider:
            raise MrcnnError(f'{option("ort_provider")} applies to the onnx backend (ONNX Runtime), not {cls.name}')
        if choice.precision not in cls.precisions:
            raise MrcnnError(f'{option("precision", choice.precision.value)} does not apply to the {cls.name} '
                             f'backend (it runs {", ".join(p.value for p in cls.precisions)}){cls.precision_hint}')

    @classmethod
    def available(cls) -> bool:
        """Whether what this backend needs is installed."""
        return True

    @classmethod
    def device_for(cls, device: str) -> str:
        """The device this backend runs on when a command's rows share `device` (bench)."""
        return device

    @classmethod
    def bench_precisions(cls, requested: Precision) -> tuple[Precision, ...]:
        """The precisions `mrcnn bench --backend all` times this backend in."""
        return (requested,) if requested in cls.precisions else (Precision.FP32,)

    @property
    def execution_device(self) -> str:
        """What runs the network: 'cpu', 'cuda:0', an onnxruntime provider, an OpenVINO device."""
        return str(self.device)

    def torch_model(self) -> MaskRCNN:
        """The PyTorch model behind this predictor (what `mrcnn export` traces)."""
        raise MrcnnError(f'the {self.name} backend runs an exported graph, not a PyTorch model: export from '
                         f'a checkpoint ({option("weights", meta="PATH")} or a zoo name)')

    def __init__(self, spec: ModelSpec, classes: Sequence[str], device: torch.device, source: str,
                 precision: str | Precision = Precision.FP32, palette: Sequence[tuple[int, int, int]] | None = None,
                 scale: tuple[int, int] = TEST_SCALE) -> None:
        self.spec, self.device, self.source, self.precision = spec, device, source, Precision.of(precision)
        self.classes: tuple[str, ...] = tuple(classes)
        self.palette = palette
        self.scale = check_scale(scale)

    def run_network(self, batch: torch.Tensor, img_shapes: Sequence[tuple[int, int]],
                    stage: Stage = no_stage) -> list[NetworkOutput]:
        """(B, 3, H, W) padded batch -> one NetworkOutput per image."""
        raise NotImplementedError

    @functools.cached_property
    def weights_sha256(self) -> str | None:
        """The SHA-256 of the weights file (what a results log records of its run), once per predictor."""
        path = Path(str(self.source))
        return file_sha256(path) if path.is_file() else None

    def identity(self) -> dict[str, Any]:
        """What about this predictor changes its results, as plain JSON types: what a results log
        records so that a resume or a merge never mixes two models."""
        return {'model': f'{self.spec.backbone_name} {self.spec.style}',
                'weights_sha256': self.weights_sha256 or str(self.source),
                'backend': self.name, 'precision': self.precision, 'scale': list(self.scale),
                'classes': list(self.classes)}

    def describe(self) -> str:
        """One line: architecture, backend, device, precision and where the weights came from."""
        scale = '' if self.scale == TEST_SCALE else f', scale {self.scale[0]}x{self.scale[1]}'
        runs_on = self.describe_template.format(name=self.name, device=self.execution_device)
        return (f'{self.spec.backbone_name} {self.spec.style}, {runs_on} ({self.precision_note()}{scale}), '
                f'from {self.source}')

    def precision_note(self) -> str:
        return str(self.precision)

    def __repr__(self) -> str:
        return f'<{type(self).__name__}: {self.describe()}>'

    @overload
    def __call__(  # type: ignore[overload-overlap] # a str may name a folder
            self, source: ImageLike, *, score_thr: float | None = None, classes: ClassSelection = None,
            channels: str = 'bgr', batch_size: int = 1, max_pixels: int = MAX_PIXELS,
            tile: TileLike = None) -> Detections: ...

    @overload
    def __call__(self, source: Sequence[ImageLike], *, score_thr: float | None = None,
                 classes: ClassSelection = None, channels: str = 'bgr', batch_size: int = 1,
                 max_pixels: int = MAX_PIXELS, tile: TileLike = None) -> list[Detections]: ...

    def __call__(self, source: ImagesLike, *, score_thr: float | None = None, classes: ClassSelection = None,
                 channels: str = 'bgr', batch_size: int = 1, max_pixels: int = MAX_PIXELS,
                 tile: TileLike = None) -> Detections | list[Detections]:
        """Detections for one image; a list of them for a list, a folder, a glob pattern or a
        batch (NHWC array, NCHW tensor).  See `predict` for the options."""
        dets = self.predict(source, score_thr=score_thr, classes=classes, channels=channels, batch_size=batch_size,
                            max_pixels=max_pixels, tile=tile)
        return dets[0] if _is_one_image(source) else dets

    def predict(self, images: ImagesLike, *, score_thr: float | None = None, classes: ClassSelection = None,
                channels: str = 'bgr', batch_size: int = 1, max_pixels: int = MAX_PIXELS,
                tile: TileLike = None) -> list[Detections]:
        """One Detections per image, in order: images as the class docstring lists, a list of them,
        a folder or a glob pattern (its images, sorted).  `score_thr` keeps detections scoring at
        least that (the model itself keeps mmdetection's > 0.05, 100 per image); `classes` keeps
        these classes, by name or 0-based index (`'cat'`, `15`, `['person', 2]`); `channels='rgb'`
        says numpy arrays are RGB.  An unreadable image, or one of more than `max_pixels`, raises
        MrcnnError.  Decoding overlaps the network (the same pipeline as `stream`).

        `tile=512` (or 'W,H', or a TileOptions for the overlap, a whole-image pass and the merge
        rules) slices each image into overlapping tiles, runs each at the model's scale (small
        objects grow), and merges their detections on masks into full-image coordinates; a TIFF is
        then read a region at a time, and `max_pixels` bounds what is decoded at once."""
        tiles = tile_options(tile)
        sources, _ = collect_sources(images, warn=_raise, images_only=True, unique=False, channels=channels)
        items = stream_sources(self, sources, batch_size=batch_size, errors='raise', max_pixels=max_pixels,
                               selection=Selection(score_thr, classes), tiles=tiles)
        return [cast(Detections, item.detections) for item in items]   # errors='raise': never None

    def stream(self, source: ImagesLike, *, vid_stride: int = 1, max_frames: int | None = None, batch_size: int = 1,
               errors: str = 'warn', max_pixels: int = MAX_PIXELS,
               **per_call: Unpack[PerCallOptions]) -> Iterator[StreamItem]:
        """One StreamItem per image or frame read, in order, from any source `mrcnn predict`
        takes: image files, folders, glob patterns, videos, camera indexes, stream and image URLs,
        and what `predict` takes in memory (or a list of them).  Decoding, the network and the
        caller's own work overlap (three threads, bounded queues).  `vid_stride` runs the model on
        every Nth video frame, `max_frames` stops each video early.  Unreadable inputs:
        `errors='warn'` (a warning, then skipped), 'raise' (MrcnnError) or 'yield' (an item with
        `error` set); images and videos of more than `max_pixels` pixels are such inputs, refused
        before they are decoded.  `score_thr`, `classes`, `channels` and `tile` as in `predict`
        (a sliced image is one item, `scene` set)."""
        unknown = set(per_call) - set(PerCallOptions.__annotations__)
        if unknown:
            raise TypeError(f'stream() got an unexpected keyword argument {sorted(unknown)[0]!r}')
        sources, _ = collect_sources(source, warn=_warn_missing, channels=per_call.get('channels', 'bgr'))
        return stream_sources(self, sources, vid_stride=vid_stride, max_frames=max_frames, batch_size=batch_size,
                              errors=errors, max_pixels=max_pixels,
                              selection=Selection(per_call.get('score_thr'), per_call.get('classes')),
                              tiles=tile_options(per_call.get('tile')))

    def predict_batch(self, images: Iterable[np.ndarray], stage: Stage = no_stage) -> list[Detections]:
        """Detections for several BGR arrays; identical to predicting them one by one.
        `stage(name)` makes a timing context per stage (see engine.timing.StageTimer)."""
        with stage('preprocess'):
            prepared = [self.prepare(img) for img in images]
        return self.predict_prepared(prepared, stage)

    def prepare(self, image: np.ndarray) -> Prepared:
        """One BGR array resized, normalised and padded for the network (thread-safe: the stream
        prepares the next images while the network runs)."""
        return prepare(image, self.spec.norm, self.device, self.scale)

    def predict_prepared(self, prepared: Sequence[Prepared], stage: Stage = no_stage) -> list[Detections]:
        """Detections for images made ready by `prepare`.  Only images whose padded sizes are equal
        share a network batch (video frames always do): extra padding would change the features
        near the border and so the detections."""
        groups: dict[tuple[int, ...], list[int]] = {}
        for i, p in enumerate(prepared):
            groups.setdefault(tuple(p.tensor.shape[1:]), []).append(i)
        results: list[Detections | None] = [None] * len(prepared)
        for members in groups.values():
            with stage('preprocess'):
                batch = pad_batch([prepared[i].tensor for i in members])
            outs = self.run_network(batch, [prepared[i].img_shape for i in members], stage)
            with stage('paste'):
                for i, out in zip(members, outs):
                    results[i] = to_detections(out, prepared[i].scale_factor, prepared[i].ori_shape, self.classes,
                                               self.palette)
        return cast(list[Detections], results)   # every image is in one group


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
