"""mrcnn: mmdetection-exact Mask R-CNN inference without mmcv, mmengine or a config system."""
__version__ = "0.1.0"


class MrcnnError(Exception):
    """A user-facing failure: the CLI prints its message as one line and exits non-zero."""


class MrcnnWarning(UserWarning):
    """Something the user should know that does not stop the run (the CLI prints one `warning:` line)."""
