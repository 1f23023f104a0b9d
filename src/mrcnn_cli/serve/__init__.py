"""`mrcnn serve`: the predictor behind HTTP (FastAPI + uvicorn, `pip install 'mrcnn-cli[serve]'`).

    from mrcnn_cli.serve import create_app
    app = create_app(mrcnn_cli.load('mask-rcnn_r50_fpn_1x_coco'))   # any ASGI host runs it
"""
from __future__ import annotations

from typing import Any

__all__ = ['ServeOptions', 'create_app']


def __getattr__(name: str) -> Any:
    if name in __all__:   # FastAPI is imported when the service is made, not with the package
        from mrcnn_cli.serve import app
        return getattr(app, name)
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')
