"""Sliced inference for images larger than one forward pass: where the tiles lie, and how a
scene's tile detections come back as one Detections in full-image coordinates.

Each tile goes through the model's own test-time resize, exactly as a photo of that size would
(the zoom-in that makes small objects detectable); `full=True` adds one pass over the whole image
at the model's scale, so that objects larger than a tile survive.  The rules that join the passes'
detections are engine.merge's."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal, NamedTuple, Union, get_args

from mrcnn_cli.errors import MrcnnError, option

if TYPE_CHECKING:
    import numpy as np

    from mrcnn_cli.io.scene import GeoReference

MergeMode = Literal['nmm', 'nms']
MatchMetric = Literal['ios', 'iou']
MERGE_MODES: tuple[str, ...] = get_args(MergeMode)
MATCH_METRICS: tuple[str, ...] = get_args(MatchMetric)
TileSize = Union[int, str, Sequence[int]]  # noqa: UP007 - evaluated on 3.10 too


class Rect(NamedTuple):
    """A pixel rectangle [x0, x1) x [y0, y1) of the full image."""
    x0: int
    y0: int
    x1: int
    y1: int

    @property
    def width(self) -> int:
        return self.x1 - self.x0

    @property
    def height(self) -> int:
        return self.y1 - self.y0


@dataclass(frozen=True)
class TileOptions:
    """How a large image is sliced and its tiles' detections merged.

    `size` (width, height) in pixels; `overlap` the fraction of a tile shared with its neighbour
    (as SAHI: int(overlap * size) pixels); `full` adds a whole-image pass; `merge` 'nmm' (the
    union of matching masks) or 'nms' (the lower-scored one dropped); `match` 'ios'
    (intersection over the smaller mask) or 'iou'; `match_thr` the measure two detections must
    exceed to be one object."""
    size: tuple[int, int]
    overlap: float = 0.2
    full: bool = False
    merge: MergeMode = 'nmm'
    match: MatchMetric = 'ios'
    match_thr: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, 'size', parse_tile_size(self.size))
        if not isinstance(self.overlap, (int, float)) or not 0.0 <= self.overlap < 1.0:
            raise MrcnnError(f'{option("tile_overlap", self.overlap)}: need a fraction in [0, 1)')
        if self.merge not in MERGE_MODES:
            raise MrcnnError(f'{option("tile_merge", self.merge)}: use {" or ".join(MERGE_MODES)}')
        if self.match not in MATCH_METRICS:
            raise MrcnnError(f'{option("tile_match", self.match)}: use {" or ".join(MATCH_METRICS)}')
        if not isinstance(self.match_thr, (int, float)) or not 0.0 <= self.match_thr < 1.0:
            raise MrcnnError(f'{option("tile_match_thr", self.match_thr)}: need a number in [0, 1)')

    def to_dict(self) -> dict[str, object]:
        """As plain JSON types (what a results log records: tiling changes the results)."""
        return {'size': list(self.size), 'overlap': self.overlap, 'full': self.full, 'merge': self.merge,
                'match': self.match, 'match_thr': self.match_thr}


MIN_TILE, MAX_TILE = 32, 1 << 16


def parse_tile_size(size: TileSize) -> tuple[int, int]:
    """512, '512', '640,480' or (640, 480) -> (width, height)."""
    try:
        if isinstance(size, str):
            parts = [int(p) for p in size.replace('x', ',').split(',')]
        elif isinstance(size, int):
            parts = [size]
        else:
            parts = [int(p) for p in size]
        if isinstance(size, bool) or len(parts) not in (1, 2):
            raise ValueError
    except (TypeError, ValueError):
        raise MrcnnError(f'{option("tile", size)}: need a size in pixels, or W,H') from None
    width, height = parts[0], parts[-1]
    if not (MIN_TILE <= width <= MAX_TILE and MIN_TILE <= height <= MAX_TILE):
        raise MrcnnError(f'{option("tile", size)}: tiles are {MIN_TILE} to {MAX_TILE} pixels a side')
    return width, height


def tile_grid(width: int, height: int, tiles: TileOptions) -> list[Rect]:
    """The tiles of a width x height image, row by row: steps of size - int(overlap * size), the
    last tile of a row (column) moved back to end on the image's edge, as SAHI's slicer lays
    them; one tile when the image is no larger than a tile."""
    tile_w, tile_h = tiles.size
    xs = _starts(width, tile_w, tile_w - int(tiles.overlap * tile_w))
    ys = _starts(height, tile_h, tile_h - int(tiles.overlap * tile_h))
    return [Rect(x, y, min(x + tile_w, width), min(y + tile_h, height)) for y in ys for x in xs]


def _starts(length: int, tile: int, step: int) -> list[int]:
    out, start = [], 0
    while start + tile < length:
        out.append(start)
        start += step
    out.append(max(0, length - tile))
    return out


@dataclass(frozen=True)
class TilePart:
    """What a tile's frame is part of (the stream's reader makes them; the caller never sees one):
    its `region` of the scene, and for the whole-image pass on a shrunk copy, the scene's (height,
    width) that its detections are pasted back onto."""
    region: Rect
    full_pass: bool = False
    scene_shape: tuple[int, int] | None = None


@dataclass(frozen=True)
class SceneInfo:
    """How a sliced image was read: its size, the number of tiles, and, when the image was not held
    whole (a TIFF read by regions), a `preview`: a copy shrunk to at most 4096 pixels a side, to
    draw on.  `georef` maps pixels to a GeoTIFF's map coordinates (None without one)."""
    width: int
    height: int
    tiles: int
    full_pass: bool = False
    preview: np.ndarray | None = field(default=None, repr=False, compare=False)
    georef: GeoReference | None = None
