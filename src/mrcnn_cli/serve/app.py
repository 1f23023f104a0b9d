"""`create_app(model)`: the HTTP service as an ASGI app (FastAPI), mountable in any ASGI host.
FastAPI is imported here, when a service is made (the `serve` extra), never with the package.

A request is decoded (its header checked against `max_pixels` first) and prepared on a worker
thread, queued for the one model thread (serve.batcher), and its detections encoded on a worker
thread again: the same COCO result entries `mrcnn predict` writes for that image."""
from __future__ import annotations

import asyncio
import base64
import hmac
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import cv2
import numpy as np
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response
from starlette.requests import ClientDisconnect

from mrcnn_cli.engine.detections import check_score_thr, select_classes
from mrcnn_cli.errors import MrcnnError, first_line
from mrcnn_cli.io.coco import category_ids
from mrcnn_cli.io.image_header import MAX_PIXELS
from mrcnn_cli.io.images import ImageTooLarge, decode_image
from mrcnn_cli.serve.batcher import Batcher, QueueFull

if TYPE_CHECKING:
    from mrcnn_cli.predictor import Predictor

MASK_FORMATS = ('rle', 'polygon', 'none')
PICTURE_FORMATS = ('none', 'jpeg', 'png')
TOO_SLOW = 'mrcnn.read_timeout'   # set in a request's scope when its body came too slowly
EXEMPT = ('/healthz', '/readyz', '/')   # probes and the page (it asks for the key) answer without it


@dataclass(frozen=True)
class ServeOptions:
    """How the service batches, bounds and guards (`mrcnn serve`'s options)."""
    max_batch: int = 4
    max_delay_ms: float = 5.0
    queue: int = 64              # requests waiting for the model; more get 503
    timeout: float = 30.0        # seconds a request may wait for its result; then 504
    api_key: str | None = None
    max_body: int = 50 * 2 ** 20
    max_pixels: int = MAX_PIXELS
    score_thr: float = 0.3       # the default threshold, as `mrcnn predict`'s
    read_timeout: float = 60.0   # seconds a client has to send a request's body; then 408 (slow-loris)


class ClientError(Exception):
    """A request the service refuses: its status and one line."""

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status, self.headers = status, headers or {}

    def response(self) -> JSONResponse:
        """The one JSON line a refusal is."""
        return JSONResponse({'error': str(self)}, status_code=self.status, headers=self.headers)


def create_app(model: Predictor, options: ServeOptions = ServeOptions()) -> FastAPI:
    """The service for `model` (a Predictor from `mrcnn_cli.load`)."""
    from contextlib import asynccontextmanager

    metrics = _Metrics(options)
    state = {'ready': False}
    # Decoding and encoding run on at most this many threads of the event loop's pool at once: more
    # would not feed the one model thread faster, and each thread that touches images keeps an
    # allocator arena of its own (the server's memory would creep up with every new one).
    workers = anyio.CapacityLimiter(2 * options.max_batch + 2)

    async def off_loop(fn: Any, *args: Any) -> Any:
        return await anyio.to_thread.run_sync(fn, *args, limiter=workers)

    batcher = Batcher(model.predict_prepared, max_batch=options.max_batch, max_delay=options.max_delay_ms / 1000,
                      queue_size=options.queue, on_batch=metrics.batch.observe)
    metrics.depth.set_function(lambda: batcher.depth)

    @asynccontextmanager
    async def lifespan(app: FastAPI):   # warm up once (the first call is slow), then ready
        from mrcnn_cli.backends.onnx_export import DEMO_IMAGE
        image = cv2.imread(str(DEMO_IMAGE))
        await asyncio.wrap_future(batcher.submit(await off_loop(model.prepare, image)))
        state['ready'] = True
        yield
        state['ready'] = False
        await off_loop(batcher.close)

    app = FastAPI(title='mrcnn', summary='Mask R-CNN instance segmentation', lifespan=lifespan)

    @app.middleware('http')
    async def guard(request: Request, call_next):
        start = time.perf_counter()
        try:
            if options.api_key and request.url.path not in EXEMPT and not _authorized(request, options.api_key):
                raise ClientError(401, 'missing or wrong API key (Authorization: Bearer KEY, or X-API-Key)',
                                  {'WWW-Authenticate': 'Bearer'})
            length = request.headers.get('content-length')
            if length is not None and (not length.isdigit() or int(length) > options.max_body):
                raise ClientError(413, f'the body is larger than the limit of {options.max_body} bytes')
            response = await call_next(request)
        except ClientError as e:   # raised here, outside the exception handlers' reach
            response = e.response()
        metrics.requests.labels(str(response.status_code)).inc()
        metrics.latency.observe(time.perf_counter() - start)
        return response

    app.add_middleware(_BodyDeadline, seconds=options.read_timeout)   # outermost: times every read

    @app.exception_handler(ClientError)
    async def client_error(request: Request, e: ClientError):
        return e.response()

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError):
        problem = e.errors()[0] if e.errors() else {}
        where = '.'.join(str(p) for p in problem.get('loc', ())[1:])
        return JSONResponse({'error': f'{where}: {problem.get("msg", "invalid")}'}, status_code=422)

    @app.exception_handler(Exception)
    async def internal(request: Request, e: Exception):   # never a traceback to the client
        return JSONResponse({'error': f'internal error ({type(e).__name__})'}, status_code=500)

    @app.get('/healthz')
    async def healthz() -> dict[str, str]:
        return {'status': 'alive'}

    @app.get('/readyz')
    async def readyz():
        if not state['ready']:
            return JSONResponse({'status': 'loading'}, status_code=503)
        return {'status': 'ready'}

    @app.get('/metrics')
    async def prometheus() -> Response:
        from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    @app.get('/v1/model')
    async def describe() -> dict[str, Any]:
        return {**model.identity(), 'describe': model.describe(), 'max_batch': options.max_batch}

    from importlib.resources import files
    page_html = (files('mrcnn_cli') / 'data' / 'serve.html').read_text()

    @app.get('/', response_class=HTMLResponse)
    async def page() -> str:
        return page_html

    async def one(request: Request, data: bytes, name: str, query: _Query) -> dict[str, Any]:
        started = time.perf_counter()
        image = await off_loop(_decode, data, name, options.max_pixels)
        prepared = await off_loop(model.prepare, image)
        decoded = time.perf_counter()
        try:
            future = batcher.submit(prepared)
        except QueueFull:
            raise ClientError(503, 'the queue is full; try again shortly', {'Retry-After': '1'}) from None
        waiting = asyncio.wrap_future(future)
        deadline = decoded + options.timeout
        while not waiting.done():
            await asyncio.wait({waiting}, timeout=min(0.25, max(0.0, deadline - time.perf_counter())))
            if waiting.done():
                break
            if await request.is_disconnected():   # nobody to answer: drop it if not yet running
                future.cancel()
                raise ClientError(499, 'client closed the request')
            if time.perf_counter() >= deadline:
                future.cancel()
                raise ClientError(504, f'no result within {options.timeout:g} s')
        det = waiting.result()
        inferred = time.perf_counter()
        body = await off_loop(_encode, det, image, query, model.classes)
        body['timings'] = {'decode_ms': (decoded - started) * 1000, 'infer_ms': (inferred - decoded) * 1000,
                           'encode_ms': (time.perf_counter() - inferred) * 1000}
        metrics.images.inc()
        return body

    async def query_of(request: Request) -> _Query:
        return _Query.parse(dict(request.query_params), model.classes, options.score_thr)

    @app.post('/v1/predict')
    async def predict(request: Request) -> dict[str, Any]:
        """The image as a multipart field `file` or as the raw body (JPEG, PNG, WebP, TIFF, BMP).
        Query: score_thr, classes (names or indexes, comma-separated), mask_format
        (rle|polygon|none), image (none|jpeg|png: the annotated picture, base64)."""
        query = await query_of(request)
        files = await _uploads(request, options.max_body)
        if len(files) != 1:
            raise ClientError(422, f'send one image (got {len(files)}); several go to /v1/predict/batch')
        return {'model': model.describe(), **await one(request, files[0][1], files[0][0], query)}

    @app.post('/v1/predict/batch')
    async def predict_batch(request: Request) -> dict[str, Any]:
        """Several images as multipart fields named `file`: one result per image, in order."""
        query = await query_of(request)
        files = await _uploads(request, options.max_body)
        if not files:
            raise ClientError(422, 'send images as multipart fields named file')
        results = await asyncio.gather(*(one(request, data, name, query) for name, data in files))
        return {'model': model.describe(), 'results': list(results)}

    return app


@dataclass(frozen=True)
class _Query:
    score_thr: float
    classes: list[int] | None
    mask_format: str
    image: str

    @classmethod
    def parse(cls, params: dict[str, str], names: tuple[str, ...], default_thr: float) -> _Query:
        unknown = set(params) - {'score_thr', 'classes', 'mask_format', 'image'}
        if unknown:
            raise ClientError(422, f'unknown option {sorted(unknown)[0]!r}')
        try:
            score_thr = check_score_thr(float(params.get('score_thr', default_thr)))
            wanted = params.get('classes')
            classes = None if not wanted else select_classes(
                [int(c) if c.strip().isdigit() else c.strip() for c in wanted.split(',')], names)
        except (MrcnnError, ValueError) as e:
            raise ClientError(422, str(e)) from None
        mask_format, image = params.get('mask_format', 'rle'), params.get('image', 'none')
        if mask_format not in MASK_FORMATS:
            raise ClientError(422, f'mask_format must be one of {", ".join(MASK_FORMATS)}')
        if image not in PICTURE_FORMATS:
            raise ClientError(422, f'image must be one of {", ".join(PICTURE_FORMATS)}')
        return cls(score_thr, classes, mask_format, image)


async def _uploads(request: Any, max_body: int) -> list[tuple[str, bytes]]:
    """(name, bytes) of the request's images: multipart fields named `file`, or the raw body,
    read at most `max_body` bytes (413 beyond, before the rest is read); 408 for a body slower
    than the read timeout, 499 for a client gone mid-upload."""
    try:
        return await _read_uploads(request, max_body)
    except ClientDisconnect:
        if TOO_SLOW in request.scope:
            raise ClientError(408, f'the body did not arrive within {request.scope[TOO_SLOW]:g} s') from None
        raise ClientError(499, 'client closed the request') from None


async def _read_uploads(request: Any, max_body: int) -> list[tuple[str, bytes]]:
    if request.headers.get('content-type', '').startswith('multipart/form-data'):
        if 'content-length' not in request.headers:   # chunked: read within the limit, then parse
            request = _replayed(request, await _read_within(request, max_body))
        try:
            form = await request.form(max_files=64, max_fields=64)
        except (ClientError, ClientDisconnect):
            raise
        except Exception as e:  # noqa: BLE001 - a malformed multipart body
            raise ClientError(422, f'not a readable multipart body ({first_line(e)})') from None
        return [(getattr(f, 'filename', None) or 'file', await f.read()) for f in form.getlist('file')
                if hasattr(f, 'read')]
    data = await _read_within(request, max_body)
    return [('body', data)] if data else []


async def _read_within(request: Any, max_body: int) -> bytes:
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_body:
            raise ClientError(413, f'the body is larger than the limit of {max_body} bytes')
        chunks.append(chunk)
    return b''.join(chunks)


def _replayed(request: Any, data: bytes) -> Any:
    """The request again, its body `data` (already read)."""
    from starlette.requests import Request
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            return {'type': 'http.disconnect'}
        sent = True
        return {'type': 'http.request', 'body': data, 'more_body': False}
    return Request(request.scope, receive)


class _BodyDeadline:
    """ASGI middleware: a request's body must have arrived `seconds` after the request began.
    Past that, reading it gives a disconnect (an exception raised here would reach the handlers
    wrapped in other middleware's task groups) and marks the scope, so that the reader answers
    408 rather than 499; the connection then closes, the rest never read."""

    def __init__(self, app: Any, seconds: float):
        self.app, self.seconds = app, seconds

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope['type'] != 'http':
            return await self.app(scope, receive, send)
        loop = asyncio.get_running_loop()
        deadline, complete = loop.time() + self.seconds, False

        async def timed_receive() -> dict[str, Any]:
            nonlocal complete
            if scope.get(TOO_SLOW):
                return {'type': 'http.disconnect'}
            if complete:   # after the body only a disconnect can come: no deadline for waiting on it
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                scope[TOO_SLOW] = self.seconds
                return {'type': 'http.disconnect'}
            complete = message['type'] != 'http.request' or not message.get('more_body', False)
            return message
        await self.app(scope, timed_receive, send)


def _decode(data: bytes, name: str, max_pixels: int) -> np.ndarray:
    """The image, or ClientError: 413 over the pixel limit (`decode_image` reads it from the
    header, before decoding), 415 for what is not a readable image."""
    try:
        return decode_image(data, name, max_pixels)
    except ImageTooLarge as e:
        raise ClientError(413, str(e)) from None
    except MrcnnError as e:
        raise ClientError(415, str(e)) from None


def _encode(det: Any, image: np.ndarray, query: _Query, classes: tuple[str, ...]) -> dict[str, Any]:
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


def _authorized(request: Any, key: str) -> bool:
    given = request.headers.get('x-api-key') or ''
    auth = request.headers.get('authorization') or ''
    if auth.lower().startswith('bearer '):
        given = auth[7:].strip()
    return hmac.compare_digest(given.encode(), key.encode())


class _Metrics:
    """Prometheus metrics in a registry of the app's own (never the process-wide default)."""

    def __init__(self, options: ServeOptions):
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, ProcessCollector
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)   # process_resident_memory_bytes: memory per replica
        self.requests = Counter('mrcnn_requests', 'HTTP requests by status', ['status'], registry=self.registry)
        self.latency = Histogram('mrcnn_request_seconds', 'request latency', registry=self.registry,
                                 buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64))
        self.batch = Histogram('mrcnn_batch_size', 'images per network call', registry=self.registry,
                               buckets=tuple(range(1, options.max_batch + 1)))
        self.depth = Gauge('mrcnn_queue_depth', 'requests waiting for the model', registry=self.registry)
        self.images = Counter('mrcnn_images', 'images answered', registry=self.registry)
