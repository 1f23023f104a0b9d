"""`Service`: what one app holds while it runs (the batching engine and its model thread, the
worker threads that decode and encode, the metrics), started by the app's lifespan or, in an app
mounted inside another (whose lifespan does not run a sub-app's), by its first request."""
from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import anyio.to_thread
import cv2
import numpy as np

from mrcnn_cli.engine.batching import BatchEngine, QueueFull
from mrcnn_cli.engine.detections import Detections
from mrcnn_cli.engine.preprocess import Prepared
from mrcnn_cli.engine.runner import Runner
from mrcnn_cli.errors import MrcnnError
from mrcnn_cli.io.coco import category_ids
from mrcnn_cli.io.images import ImageTooLarge, decode_image
from mrcnn_cli.serve.errors import ClientError
from mrcnn_cli.serve.options import ServeOptions
from mrcnn_cli.serve.schemas import MaskFormat, PictureFormat

T = TypeVar('T')


@dataclass(frozen=True)
class Query:
    """A request's per-call options, checked."""
    score_thr: float
    classes: list[int] | None
    mask_format: MaskFormat
    image: PictureFormat


class Service:
    """The model behind the app: `answer(data, name, query, gone)` decodes an image, runs it
    through the batching engine and encodes `mrcnn predict`'s COCO entries for it."""

    def __init__(self, model: Runner, options: ServeOptions, describe: str) -> None:
        self.model, self.options, self.describe = model, options, describe
        self.metrics = Metrics(options)
        self.engine: BatchEngine[Prepared, Detections] | None = None
        self.ready = False
        self._starting: asyncio.Task[None] | None = None
        # Decoding and encoding run on at most this many threads of the event loop's pool at once: more
        # would not feed the one model thread faster, and each thread that touches images keeps an
        # allocator arena of its own (the server's memory would creep up with every new one).
        self._workers: anyio.CapacityLimiter | None = None

    async def start(self) -> None:
        """Start the model thread and warm the model up (its first call is slow); then ready.
        Concurrent callers share one start."""
        self.start_soon()
        assert self._starting is not None
        await asyncio.shield(self._starting)

    def start_soon(self) -> None:
        """Start in the background (a probe of a mounted app asks for it, then answers 503)."""
        if self._starting is None:
            self._starting = asyncio.ensure_future(self._start())

    async def _start(self) -> None:
        self._workers = anyio.CapacityLimiter(2 * self.options.max_batch + 2)
        self.engine = BatchEngine(self.model.predict_prepared, max_batch=self.options.max_batch,
                                  max_delay=self.options.max_delay_ms / 1000, queue_size=self.options.queue,
                                  on_batch=self.metrics.batch.observe, name='mrcnn-serve-model')
        self.metrics.depth.set_function(lambda: self.engine.depth if self.engine else 0)
        from mrcnn_cli.backends.onnx_export import DEMO_IMAGE
        image = cv2.imread(str(DEMO_IMAGE))
        await asyncio.wrap_future(self.engine.submit(await self.off_loop(self.model.prepare, image)))
        self.ready = True

    async def close(self) -> None:
        """Finish what is queued, then stop the model thread."""
        self.ready = False
        if self.engine is not None:
            await anyio.to_thread.run_sync(self.engine.close)

    async def off_loop(self, fn: Callable[..., T], *args: Any) -> T:
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._workers)

    async def answer(self, data: bytes, name: str, query: Query, gone: Callable[[], Any]) -> dict[str, Any]:
        """One image's result body.  `gone()` (awaitable) says whether the client has left; a
        cancelled call (another image of its batch was refused) drops its job if not yet run."""
        await self.start()
        assert self.engine is not None
        started = time.perf_counter()
        image = await self.off_loop(decode, data, name, self.options.max_pixels)
        prepared = await self.off_loop(self.model.prepare, image)
        decoded = time.perf_counter()
        try:
            future = self.engine.submit(prepared)
        except QueueFull:
            raise ClientError(503, 'the queue is full; try again shortly', {'Retry-After': '1'}) from None
        self.metrics.running.inc()
        try:
            det = await self._wait(future, decoded + self.options.timeout, gone)
        finally:
            future.cancel()   # when not yet run: never run (a refusal, a timeout, a client gone)
            self.metrics.running.dec()
        inferred = time.perf_counter()
        body = await self.off_loop(encode, det, image, query, self.model.classes)
        body['timings'] = {'decode_ms': (decoded - started) * 1000, 'infer_ms': (inferred - decoded) * 1000,
                           'encode_ms': (time.perf_counter() - inferred) * 1000}
        self.metrics.images.inc()
        return body

    async def _wait(self, future: Any, deadline: float, gone: Callable[[], Any]) -> Detections:
        waiting = asyncio.wrap_future(future)
        while not waiting.done():
            await asyncio.wait({waiting}, timeout=min(0.25, max(0.0, deadline - time.perf_counter())))
            if waiting.done():
                break
            if await gone():   # nobody to answer: drop it if not yet running
                raise ClientError(499, 'client closed the request')
            if time.perf_counter() >= deadline:
                raise ClientError(504, f'no result within {self.options.timeout:g} s')
        return waiting.result()


def decode(data: bytes, name: str, max_pixels: int) -> np.ndarray:
    """The image, or ClientError: 413 over the pixel limit (`decode_image` reads it from the
    header, before decoding), 415 for what is not a readable image."""
    try:
        return decode_image(data, name, max_pixels)
    except ImageTooLarge as e:
        raise ClientError(413, str(e)) from None
    except MrcnnError as e:
        raise ClientError(415, str(e)) from None


def encode(det: Detections, image: np.ndarray, query: Query, classes: tuple[str, ...]) -> dict[str, Any]:
    """The response body: `mrcnn predict`'s COCO result entries for the image (with each class's
    name), and the annotated picture when asked for."""
    det = det.filter(score_thr=query.score_thr, classes=query.classes)
    entries = det.to_coco(mask_format='rle' if query.mask_format == 'none' else query.mask_format)
    names = dict(zip(category_ids(classes), classes))
    for entry in entries:
        entry.pop('image_id')
        entry['category_name'] = names[entry['category_id']]
        if query.mask_format == 'none':
            del entry['segmentation']
    body: dict[str, Any] = {'width': det.width, 'height': det.height, 'detections': entries}
    if query.image != 'none':
        ok, data = cv2.imencode('.jpg' if query.image == 'jpeg' else '.png', det.plot(image, score_thr=0))
        body['image'] = {'format': query.image, 'base64': base64.b64encode(data.tobytes()).decode('ascii')}
    return body


class Metrics:
    """Prometheus metrics in a registry of the app's own (never the process-wide default)."""

    def __init__(self, options: ServeOptions) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)   # process_resident_memory_bytes: memory per replica
        self.requests = Counter('mrcnn_requests', 'HTTP requests by status', ['status'], registry=self.registry)
        self.latency = Histogram('mrcnn_request_seconds', 'request latency', registry=self.registry,
                                 buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64))
        self.batch = Histogram('mrcnn_batch_size', 'images per network call', registry=self.registry,
                               buckets=tuple(range(1, options.max_batch + 1)))
        self.depth = Gauge('mrcnn_queue_depth', 'requests waiting for the model', registry=self.registry)
        self.running = Gauge('mrcnn_images_in_flight', 'images submitted to the model and not yet answered',
                             registry=self.registry)
        self.images = Counter('mrcnn_images', 'images answered', registry=self.registry)
