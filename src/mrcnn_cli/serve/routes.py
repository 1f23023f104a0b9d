"""The service's endpoints, as routers: probes and the page (open), the model's description and
predictions (behind the API key when one is set).  Each handler reads its Service from the app
(`service` dependency) and its options from typed parameters, which `/docs` shows."""
from __future__ import annotations

import asyncio
import hmac
from importlib.resources import files
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Security
from fastapi.responses import HTMLResponse, JSONResponse, Response
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer
from starlette.requests import ClientDisconnect

from mrcnn_cli.engine.detections import check_score_thr, select_classes
from mrcnn_cli.errors import MrcnnError, first_line
from mrcnn_cli.serve.errors import ClientError
from mrcnn_cli.serve.schemas import (
    BatchResponse,
    ErrorResponse,
    MaskFormat,
    ModelInfo,
    PictureFormat,
    PredictResponse,
    Status,
)
from mrcnn_cli.serve.service import Query as Options
from mrcnn_cli.serve.service import Service

TOO_SLOW = 'mrcnn.read_timeout'   # set in a request's scope when its body came too slowly (see app.BodyLimits)
TOO_LARGE = 'mrcnn.too_large'     # set when its body passed max_body
FIELD = 'file'                    # the multipart field images come in
QUERY_OPTIONS = ('score_thr', 'classes', 'mask_format', 'image')
REFUSALS: dict[int | str, dict[str, Any]] = {
    status: {'model': ErrorResponse, 'description': text} for status, text in (
        (401, 'missing or wrong API key'), (408, 'the body came too slowly'), (413, 'body or image too large'),
        (415, 'not a readable image'), (422, 'bad options or no image'), (503, 'the queue is full (Retry-After)'),
        (504, 'no result in time'))}


def service(request: Request) -> Service:
    """The Service of the app that routed the request (a mounted app's own, not its parent's)."""
    return request.scope['app'].state.service  # type: ignore[no-any-return]


_bearer = HTTPBearer(auto_error=False, description='Authorization: Bearer KEY')
_header = APIKeyHeader(name='X-API-Key', auto_error=False, description='X-API-Key: KEY')


def api_key(svc: Annotated[Service, Depends(service)],
            bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
            header: Annotated[str | None, Security(_header)] = None) -> None:
    """The key, when the service wants one (compared in constant time)."""
    wanted = svc.options.api_key
    if not wanted:
        return
    given = bearer.credentials if bearer is not None else header or ''
    if not hmac.compare_digest(given.encode(), wanted.encode()):
        raise ClientError(401, 'missing or wrong API key (Authorization: Bearer KEY, or X-API-Key)',
                          {'WWW-Authenticate': 'Bearer'})


def query_options(request: Request, svc: Annotated[Service, Depends(service)],
                  score_thr: Annotated[float | None, Query(
                      ge=0, le=1, description='lowest score returned (default: the server\'s, 0.3)')] = None,
                  classes: Annotated[str | None, Query(
                      description='keep these classes: names or 0-based indexes, comma-separated',
                      examples=['person,car'])] = None,
                  mask_format: Annotated[MaskFormat, Query(description='rle, polygon or none')] = 'rle',
                  image: Annotated[PictureFormat, Query(
                      description='also return the annotated picture, base64: none, jpeg or png')] = 'none',
                  ) -> Options:
    unknown = sorted(set(request.query_params) - set(QUERY_OPTIONS))
    if unknown:
        raise ClientError(422, f'unknown option {unknown[0]!r} (options: {", ".join(QUERY_OPTIONS)})')
    try:
        thr = check_score_thr(svc.options.score_thr if score_thr is None else score_thr)
        keep = None if not classes else select_classes(
            [int(c) if c.strip().isdigit() else c.strip() for c in classes.split(',')], svc.model.classes)
    except MrcnnError as e:
        raise ClientError(422, f'{first_line(e)}') from None
    return Options(thr, keep, mask_format, image)


probes = APIRouter(tags=['probes'])
page = APIRouter(include_in_schema=False)
api = APIRouter(prefix='/v1', tags=['predict'], dependencies=[Depends(api_key)], responses=REFUSALS)
metrics = APIRouter(tags=['probes'], dependencies=[Depends(api_key)])


@probes.get('/healthz', response_model=Status)
async def healthz() -> dict[str, str]:
    """Alive (the process answers)."""
    return {'status': 'alive'}


@probes.get('/readyz', response_model=Status, responses={503: {'model': Status}})
async def readyz(svc: Annotated[Service, Depends(service)]) -> Any:
    """Ready: the model is loaded and warm.  In a mounted app the first probe starts it."""
    if not svc.ready:
        svc.start_soon()
        return JSONResponse({'status': 'loading'}, status_code=503)
    return {'status': 'ready'}


@metrics.get('/metrics', response_class=Response)
async def prometheus(svc: Annotated[Service, Depends(service)]) -> Response:
    """Prometheus metrics: requests by status, latency, batch sizes, queue depth, memory."""
    from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
    return Response(generate_latest(svc.metrics.registry), media_type=CONTENT_TYPE_LATEST)


_PAGE = (files('mrcnn_cli') / 'data' / 'serve.html').read_text()


@page.get('/', response_class=HTMLResponse)
async def index() -> str:
    """The page: upload an image, see the drawing and the table (it asks for the key itself)."""
    return _PAGE


@api.get('/model', response_model=ModelInfo)
async def describe(svc: Annotated[Service, Depends(service)]) -> dict[str, Any]:
    """The model: architecture, weights checksum, backend, precision, scale, classes."""
    identity = svc.model.identity()  # type: ignore[attr-defined]
    return {**identity, 'describe': svc.describe, 'max_batch': svc.options.max_batch}


IMAGE_BODY = {'requestBody': {'content': {
    'multipart/form-data': {'schema': {'type': 'object', 'properties': {FIELD: {'type': 'string', 'format': 'binary'}},
                                       'required': [FIELD]}},
    'application/octet-stream': {'schema': {'type': 'string', 'format': 'binary'}}}}}


@api.post('/predict', response_model=PredictResponse, response_model_exclude_none=True, openapi_extra=IMAGE_BODY)
async def predict(request: Request, svc: Annotated[Service, Depends(service)],
                  options: Annotated[Options, Depends(query_options)]) -> dict[str, Any]:
    """One image, as the multipart field `file` or as the raw body (JPEG, PNG, WebP, TIFF, BMP):
    `mrcnn predict`'s COCO result entries for it."""
    uploads = await read_uploads(request, svc.options.max_body)
    if len(uploads) != 1:
        raise ClientError(422, f'send one image (got {len(uploads)}) as the multipart field {FIELD!r} or as the '
                               f'raw body{_other_fields(request)}; several go to /v1/predict/batch')
    name, data = uploads[0]
    return {'model': svc.describe, **await svc.answer(data, name, options, request.is_disconnected)}


@api.post('/predict/batch', response_model=BatchResponse, response_model_exclude_none=True,
          openapi_extra={'requestBody': {'content': {'multipart/form-data': IMAGE_BODY['requestBody']['content'][
              'multipart/form-data']}}})
async def predict_batch(request: Request, svc: Annotated[Service, Depends(service)],
                        options: Annotated[Options, Depends(query_options)]) -> dict[str, Any]:
    """Several images as multipart fields named `file`: one result per image, in order.  When
    one is refused, the others' work stops and the refusal is the answer."""
    uploads = await read_uploads(request, svc.options.max_body)
    if not uploads:
        raise ClientError(422, f'send images as multipart fields named {FIELD!r}{_other_fields(request)}')
    tasks = [asyncio.ensure_future(svc.answer(data, name, options, request.is_disconnected)) for name, data in uploads]
    for task in tasks:   # a refusal that lands after the first is this answer's too: retrieved, not logged
        task.add_done_callback(lambda t: t.cancelled() or t.exception())
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_EXCEPTION)
    finally:
        for task in tasks:
            task.cancel()   # a refused image: the others stop (their queued jobs are dropped)
    failed = next((t for t in tasks if t.done() and not t.cancelled() and t.exception() is not None), None)
    if failed is not None:
        raise failed.exception()  # type: ignore[misc]
    return {'model': svc.describe, 'results': [t.result() for t in tasks]}


def _other_fields(request: Request) -> str:
    found = request.scope.get('mrcnn.fields') or []
    return f' (got fields: {", ".join(sorted(found))})' if found else ''


async def read_uploads(request: Request, max_body: int) -> list[tuple[str, bytes]]:
    """(name, bytes) of the request's images: multipart fields named `file`, or the raw body.
    The body's size and time limits are app.BodyLimits'; here they become 413 and 408, and a
    client gone mid-upload a 499."""
    try:
        return await _read(request)
    except ClientDisconnect:
        if TOO_LARGE in request.scope:
            raise ClientError(413, f'the body is larger than the limit of {max_body} bytes') from None
        if TOO_SLOW in request.scope:
            raise ClientError(408, f'the body did not arrive within {request.scope[TOO_SLOW]:g} s') from None
        raise ClientError(499, 'client closed the request') from None


async def _read(request: Request) -> list[tuple[str, bytes]]:
    if request.headers.get('content-type', '').startswith('multipart/form-data'):
        try:
            form = await request.form(max_files=64, max_fields=64)
        except ClientDisconnect:
            raise
        except Exception as e:  # noqa: BLE001 - a malformed multipart body
            raise ClientError(422, f'not a readable multipart body ({first_line(e)})') from None
        request.scope['mrcnn.fields'] = [k for k in form if k != FIELD]
        return [(getattr(f, 'filename', None) or FIELD, await f.read()) for f in form.getlist(FIELD)
                if hasattr(f, 'read')]
    data = await request.body()
    return [('body', data)] if data else []
