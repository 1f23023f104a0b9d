"""The one predictor interface that predict, eval, bench and the Python API share."""
from __future__ import annotations

import functools
import warnings
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Union

import numpy as np
import torch

from mrcnn_cli.engine.detections import Detections
from mrcnn_cli.engine.postprocess import to_detections
from mrcnn_cli.engine.preprocess import TEST_SCALE, Prepared, check_scale, pad_batch, prepare
from mrcnn_cli.engine.stream import StreamItem, stream_sources
from mrcnn_cli.engine.timing import no_stage
from mrcnn_cli.errors import MrcnnError, MrcnnWarning
from mrcnn_cli.io.files import file_sha256
from mrcnn_cli.io.images import MAX_PIXELS
from mrcnn_cli.io.sources import ARRAY, IMAGE, Source, collect_sources, is_video_file

ImageLike = Union[str, Path, np.ndarray]  # noqa: UP007 - a runtime alias, evaluated on Python 3.10 too


def resolve_device(device='auto'):
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
    """BGR uint8 images in, Detections out.  Backends implement `run_network`.

    >>> det = model('street.jpg')                               # doctest: +SKIP
    >>> dets = model.predict(['a.jpg', 'b.png'], batch_size=2)  # doctest: +SKIP
    >>> for item in model.stream('road.mp4', vid_stride=2):      # doctest: +SKIP
    ...     print(item.frame_index, len(item.detections))
    """

    name = 'base'

    def __init__(self, spec, classes, device, source, precision='fp32', palette=None, scale=TEST_SCALE):
        self.spec, self.device, self.source, self.precision = spec, device, source, precision
        self.classes: tuple = tuple(classes)
        self.palette = palette
        self.scale = check_scale(scale)

    def run_network(self, batch, img_shapes, stage=no_stage):
        """(B, 3, H, W) padded batch -> one NetworkOutput per image."""
        raise NotImplementedError

    @functools.cached_property
    def weights_sha256(self) -> str | None:
        """The SHA-256 of the weights file (what a results log records of its run), once per predictor."""
        path = Path(str(self.source))
        return file_sha256(path) if path.is_file() else None

    def describe(self) -> str:
        return (f'{self.spec.backbone_name} {self.spec.style}, {self.name} backend on {self.device} '
                f'({self.precision}{self._scale_note()}), from {self.source}')

    def _scale_note(self):
        return '' if self.scale == TEST_SCALE else f', scale {self.scale[0]}x{self.scale[1]}'


    def __call__(self, image: ImageLike) -> Detections:
        """Detections for one image: a path or a BGR uint8 array (as cv2.imread gives)."""
        return self.predict([image])[0]

    def predict(self, images: Sequence[ImageLike], *, batch_size: int = 1,
                max_pixels: int = MAX_PIXELS) -> list[Detections]:
        """Detections for each image (paths or BGR arrays), in order; an unreadable image, or one
        of more than `max_pixels`, raises MrcnnError.  Decoding overlaps the network (the same
        pipeline as `stream`)."""
        if isinstance(images, (str, Path, np.ndarray)):
            raise TypeError('predict takes a list of images; call the model itself for one image')
        sources = [Source(ARRAY, img, f'array{i}') if isinstance(img, np.ndarray)
                   else Source(IMAGE, Path(img), str(img)) for i, img in enumerate(images)]
        if any(s.kind == IMAGE and (s.location.is_dir() or is_video_file(s.location)) for s in sources):
            raise MrcnnError('predict takes image files and arrays, one Detections each; '
                             'use stream() for folders, patterns and videos')
        return [item.detections for item in stream_sources(self, sources, batch_size=batch_size, errors='raise',
                                                            max_pixels=max_pixels)]

    def stream(self, source, *, vid_stride: int = 1, max_frames: int | None = None, batch_size: int = 1,
               errors: str = 'warn', max_pixels: int = MAX_PIXELS) -> Iterator[StreamItem]:
        """One StreamItem per image or frame read, in order, from any source `mrcnn predict`
        takes: image files, folders, glob patterns, videos, camera indexes, stream URLs, arrays
        (or a list of them).  Decoding, the network and the caller's own work overlap (three
        threads, bounded queues).  `vid_stride` runs the model on every Nth video frame,
        `max_frames` stops each video early.  Unreadable inputs: `errors='warn'` (a warning, then
        skipped), 'raise' (MrcnnError) or 'yield' (an item with `error` set); images and videos of
        more than `max_pixels` pixels are such inputs, refused before they are decoded."""
        items = source if isinstance(source, (list, tuple)) else [source]
        if items and all(isinstance(s, Source) for s in items):   # already resolved (the commands)
            sources = list(items)
        else:
            sources, _ = collect_sources(items, warn=_warn_missing)
        return stream_sources(self, sources, vid_stride=vid_stride, max_frames=max_frames,
                              batch_size=batch_size, errors=errors, max_pixels=max_pixels)

    def predict_batch(self, images: Iterable[np.ndarray], stage=no_stage) -> list[Detections]:
        """Detections for several BGR arrays; identical to predicting them one by one.
        `stage(name)` makes a timing context per stage (see engine.timing.StageTimer)."""
        with stage('preprocess'):
            prepared = [self.prepare(img) for img in images]
        return self.predict_prepared(prepared, stage)

    def prepare(self, image: np.ndarray) -> Prepared:
        """One BGR array resized, normalised and padded for the network (thread-safe: the stream
        prepares the next images while the network runs)."""
        return prepare(image, self.spec.norm, self.device, self.scale)

    def predict_prepared(self, prepared: Sequence[Prepared], stage=no_stage) -> list[Detections]:
        """Detections for images made ready by `prepare`.  Only images whose padded sizes are equal
        share a network batch (video frames always do): extra padding would change the features
        near the border and so the detections."""
        groups = {}
        for i, p in enumerate(prepared):
            groups.setdefault(tuple(p.tensor.shape[1:]), []).append(i)
        results = [None] * len(prepared)
        for members in groups.values():
            with stage('preprocess'):
                batch = pad_batch([prepared[i].tensor for i in members])
            outs = self.run_network(batch, [prepared[i].img_shape for i in members], stage)
            with stage('paste'):
                for i, out in zip(members, outs):
                    results[i] = to_detections(out, prepared[i].scale_factor, prepared[i].ori_shape, self.classes,
                                               self.palette)
        return results


def _warn_missing(message):
    warnings.warn(message.removeprefix('warning: '), MrcnnWarning, stacklevel=4)

