"""`create_app(model)`: the HTTP service as an ASGI app (FastAPI), mountable in any ASGI host.
FastAPI is imported here, when a service is made (the `serve` extra), never with the package.

A request is decoded (its header checked against `max_pixels` first) and prepared on a worker
thread, queued for the one model thread (engine.batching), and its detections encoded on a
worker thread again: the same COCO result entries `mrcnn predict` writes for that image.

    request -> BodyLimits (size, deadline) -> metrics -> router -> api_key, query_options
            -> Service.answer: decode, prepare -> BatchEngine -> model thread -> encode -> JSON
"""
from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from mrcnn_cli.serve import routes
from mrcnn_cli.serve.errors import ClientError
from mrcnn_cli.serve.options import ServeOptions
from mrcnn_cli.serve.service import Service

if TYPE_CHECKING:
    from mrcnn_cli.predictor import Predictor

__all__ = ['ClientError', 'ServeOptions', 'create_app']


def create_app(model: Predictor, options: ServeOptions = ServeOptions()) -> FastAPI:
    """The service for `model` (a Predictor from `mrcnn_cli.load`).  Its model thread starts in
    the app's lifespan; mounted in another app (whose lifespan does not run a sub-app's), on its
    first request or readiness probe, and then the parent closes it in its own lifespan with
    `await app.state.service.close()`."""
    svc = Service(model, options, model.describe())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await svc.start()
        yield
        await svc.close()

    app = FastAPI(title='mrcnn', summary='Mask R-CNN instance segmentation', lifespan=lifespan,
                  description='Offline: the Swagger UI at /docs loads its script from a CDN; /openapi.json '
                              'is served here.')
    app.state.service = svc
    for router in (routes.probes, routes.page, routes.metrics, routes.api):
        app.include_router(router)
    app.add_exception_handler(ClientError, _client_error)
    app.add_exception_handler(RequestValidationError, _invalid)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _internal)
    app.add_middleware(BodyLimits, max_body=options.max_body, seconds=options.read_timeout)
    app.middleware('http')(_counted(svc))   # outermost: counts every answer, refusals included
    return app


def _counted(svc: Service) -> Callable[[Request, Callable[[Request], Awaitable[Response]]], Awaitable[Response]]:
    async def count(request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        start = time.perf_counter()
        response = await call_next(request)
        svc.metrics.requests.labels(str(response.status_code)).inc()
        svc.metrics.latency.observe(time.perf_counter() - start)
        return response
    return count


async def _client_error(request: Request, e: Exception) -> Response:
    assert isinstance(e, ClientError)
    return e.response()


async def _invalid(request: Request, e: Exception) -> Response:
    assert isinstance(e, RequestValidationError)
    problem = e.errors()[0] if e.errors() else {}
    where = '.'.join(str(p) for p in problem.get('loc', ())[1:])
    return JSONResponse({'error': f'{where}: {problem.get("msg", "invalid")}'}, status_code=422)


async def _http_error(request: Request, e: Exception) -> Response:   # 404, 405: the same one line
    assert isinstance(e, HTTPException)
    return JSONResponse({'error': f'{request.method} {request.url.path}: {e.detail}'}, status_code=e.status_code,
                        headers=e.headers)


async def _internal(request: Request, e: Exception) -> Response:   # never a traceback to the client
    return JSONResponse({'error': f'internal error ({type(e).__name__})'}, status_code=500)


class BodyLimits:
    """ASGI middleware, the one place a body's size and time are bounded: a declared length over
    `max_body` is answered 413 at once; a body that grows past it while it arrives (chunked), or
    has not arrived `seconds` after the request began, reads as a disconnect (an exception raised
    here would reach the handlers wrapped in other middleware's task groups) and marks the scope,
    so that the reader answers 413 or 408 rather than 499; the connection then closes."""

    def __init__(self, app: Any, max_body: int, seconds: float) -> None:
        self.app, self.max_body, self.seconds = app, max_body, seconds

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope['type'] != 'http':
            return await self.app(scope, receive, send)
        length = dict(scope.get('headers') or []).get(b'content-length')
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            response = ClientError(413, f'the body is larger than the limit of {self.max_body} bytes').response()
            return await response(scope, receive, send)
        loop = asyncio.get_running_loop()
        deadline, complete, size = loop.time() + self.seconds, False, 0

        async def limited_receive() -> dict[str, Any]:
            nonlocal complete, size
            if scope.get(routes.TOO_SLOW) or scope.get(routes.TOO_LARGE):
                return {'type': 'http.disconnect'}
            if complete:   # after the body only a disconnect can come: no deadline for waiting on it
                return await receive()  # type: ignore[no-any-return]
            try:
                message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                scope[routes.TOO_SLOW] = self.seconds
                return {'type': 'http.disconnect'}
            size += len(message.get('body', b''))
            if size > self.max_body:
                scope[routes.TOO_LARGE] = True
                return {'type': 'http.disconnect'}
            complete = message['type'] != 'http.request' or not message.get('more_body', False)
            return message  # type: ignore[no-any-return]
        await self.app(scope, limited_receive, send)
