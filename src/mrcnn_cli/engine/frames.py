"""What flows inside a stream between its reader thread, its model thread and the merge of a
sliced image: a Frame to run (an image, a video frame, a tile), a SceneEnd closing a sliced image,
a Problem reporting an input.  Users never see these: the stream turns each into the public
StreamItem (engine.pipeline)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Union

if TYPE_CHECKING:
    import numpy as np

    from mrcnn_cli.engine.detections import Detections
    from mrcnn_cli.engine.tiling import SceneInfo, TilePart
    from mrcnn_cli.io.video import VideoInfo


@dataclass
class _FromSource:
    source: str              # the input as given (a path, a URL, a camera index; array<i> ...)
    kind: str                # image, video, camera, stream, array, bytes, url
    source_index: int        # its place among the sources


@dataclass
class Frame(_FromSource):
    """Pixels for the model: `inferred` False between vid_stride steps (the last inferred frame's
    detections are reused); `tile` set for a tile of a sliced image (or its whole-image pass)."""
    image: np.ndarray = field(repr=False, default=None)  # type: ignore[arg-type] # always given
    frame_index: int = 0
    inferred: bool = True
    video: VideoInfo | None = None
    tile: TilePart | None = None
    detections: Detections | None = field(default=None, repr=False)   # set by the pipeline


@dataclass
class SceneEnd(_FromSource):
    """Closes a sliced image: its tiles' detections are merged into one Detections.  `image` is
    the image itself when it was held whole (None when read by regions)."""
    info: SceneInfo = None  # type: ignore[assignment] # always given
    image: np.ndarray | None = field(default=None, repr=False)


@dataclass
class Problem(_FromSource):
    """An input that could not be read (`error`), was read only in part (`warning`), or news of a
    live stream that lost nothing it sent (`note`: it dropped, came back, ended)."""
    error: str | None = None
    warning: str | None = None
    note: str | None = None


Item = Union[Frame, SceneEnd, Problem]  # noqa: UP007 - evaluated on 3.10 too
