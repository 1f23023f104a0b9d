"""`mrcnn serve`: the predictor behind HTTP (FastAPI + uvicorn, `pip install 'mrcnn-cli[serve]'`).

    from mrcnn_cli.serve import create_app
    app = create_app(mrcnn_cli.load('mask-rcnn_r50_fpn_1x_coco'))   # any ASGI host runs it

Layout: options (ServeOptions, the one list of options), schemas (the answers' Pydantic models),
service (the model thread and the work per image), routes (routers and dependencies), app
(create_app: routers, error handlers, body limits, lifespan), server (uvicorn), ray_serve.
"""
from __future__ import annotations

from typing import Any

__all__ = ['ServeOptions', 'create_app']


def __getattr__(name: str) -> Any:
    if name == 'ServeOptions':   # no FastAPI needed
        from mrcnn_cli.serve.options import ServeOptions
        return ServeOptions
    if name == 'create_app':   # FastAPI is imported when the service is made, not with the package
        from mrcnn_cli.serve.app import create_app
        return create_app
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
