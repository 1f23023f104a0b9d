"""mrcnn: mmdetection-exact Mask R-CNN inference without mmcv, mmengine or a config system.

    import mrcnn_cli
    model = mrcnn_cli.load('mask-rcnn_r50_fpn_1x_coco')
    det = model('street.jpg')
    det.filter(score_thr=0.5).to_coco(image_id=1)

Importing the package is cheap and changes nothing in the process: the names below are
imported on first use.
"""
from mrcnn_cli.errors import MrcnnError, MrcnnWarning
from mrcnn_cli.version import __version__

__all__ = ['Detections', 'MaskTracker', 'ModelChoice', 'MrcnnError', 'MrcnnWarning', 'Precision', 'Predictor',
           'StreamItem', 'TileOptions', 'TrackOptions', 'load', 'save_tracks', 'tune_cpu_allocator', '__version__']

_LAZY = {
    'load': 'mrcnn_cli.api',
    'Detections': 'mrcnn_cli.engine.detections',
    'ModelChoice': 'mrcnn_cli.engine.choice',
    'Precision': 'mrcnn_cli.engine.choice',
    'Predictor': 'mrcnn_cli.predictor',
    'StreamItem': 'mrcnn_cli.engine.stream',
    'TileOptions': 'mrcnn_cli.engine.tiling',
    'MaskTracker': 'mrcnn_cli.engine.tracking',
    'TrackOptions': 'mrcnn_cli.engine.tracking',
    'save_tracks': 'mrcnn_cli.engine.tracking',
    'tune_cpu_allocator': 'mrcnn_cli.engine.memory',
}


def __getattr__(name: str) -> object:
    if name in _LAZY:
        import importlib
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f'module {__name__!r} has no attribute {name!r}')


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
